"""Which templates the runtime can run (pure): locally, a process form whose program is installed; on Kubernetes,
every template's image."""

from __future__ import annotations

from jushostit.catalog import loader
from jushostit.catalog.availability import NOT_RUNNABLE, unavailable_reason
from jushostit.catalog.spec import TemplateSpec

SHIPPED = {spec.code: spec for spec in loader.load_templates()}


def with_program(program: str) -> TemplateSpec:
    static = SHIPPED["static-site"]
    assert static.process is not None
    process = static.process.model_copy(update={"command": [program, "--port", "{port}"]})
    return static.model_copy(update={"process": process})


def test_a_template_runs_here_only_with_a_process_form_whose_program_is_installed() -> None:
    assert unavailable_reason(SHIPPED["static-site"], "local") is None  # {python}: the interpreter running JusHostIt
    assert unavailable_reason(SHIPPED["wordpress"], "local") == NOT_RUNNABLE
    assert unavailable_reason(with_program("sh"), "local") is None
    missing = unavailable_reason(with_program("no-such-program-3f9a"), "local")
    assert missing == "'no-such-program-3f9a' is not installed on this server"


def test_every_template_runs_on_kubernetes_whatever_its_process_form() -> None:
    assert all(unavailable_reason(spec, "kubernetes") is None for spec in SHIPPED.values())
    assert unavailable_reason(with_program("no-such-program-3f9a"), "kubernetes") is None
