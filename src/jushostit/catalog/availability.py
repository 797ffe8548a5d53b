"""Whether a template can run on this server's runtime (`JUSHOSTIT_RUNTIME`), and why not.

The local runtime runs a template's `process` form as a child process, so a template without one — a container
image with its database — cannot run there, and one whose program is not installed cannot either. The catalog
says so (`available`, `unavailable_reason`), ordering refuses such a template (409 `template_unavailable`) before
anything is created or counted, and the local driver reports an instance that exists anyway (ordered before, or
its template changed since) `failed` with the same reason. The Kubernetes runtime runs every template's image
(installing a template checks its manifests: `reconcile.manifests.refuse_undeployable`).
"""

from __future__ import annotations

import shutil

from jushostit.catalog.spec import SeatTemplateSpec, TemplateSpec

NOT_RUNNABLE = "template not runnable on the local runtime"
PLACEHOLDERS = ("{python}", "{port}", "{data_dir}", "{host}")


def unavailable_reason(template: TemplateSpec | SeatTemplateSpec, runtime: str) -> str | None:
    """None when `runtime` can run `template`; otherwise a short reason, safe to show anyone. A seat runs on its
    platform, whatever this server's runtime."""
    if runtime == "kubernetes" or isinstance(template, SeatTemplateSpec):
        return None
    if template.process is None:
        return NOT_RUNNABLE  # a container image (and its database): needs a container runtime
    program = template.process.command[0]
    if not any(p in program for p in PLACEHOLDERS) and shutil.which(program) is None:
        return f"{program[:100]!r} is not installed on this server"
    return None
