"""Which templates the runtime can run (pure): a process form whose program is installed."""

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
    assert unavailable_reason(SHIPPED["static-site"]) is None  # {python}: the interpreter running JusHostIt
    assert unavailable_reason(SHIPPED["wordpress"]) == NOT_RUNNABLE
    assert unavailable_reason(with_program("sh")) is None
    missing = unavailable_reason(with_program("no-such-program-3f9a"))
    assert missing == "'no-such-program-3f9a' is not installed on this server"
