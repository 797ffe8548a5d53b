"""Start-up of every entry point (`serve`, `worker`, the CLI, the tests, the bench): the container, opened with
the application's own pieces. `jushostit.container` and `kit` know no domain; this module names it: the shipped
plans and templates are seeded (a broken one stops the start-up) and the task modules are loaded.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from jushostit.catalog.service import seed as seed_catalog
from jushostit.config import Settings
from jushostit.container import Container
from jushostit.container import open_container as _open_container

# The modules that register procrastinate tasks; imported when the job app connects.
TASK_MODULES = (
    "jushostit.notifications.tasks",
    "jushostit.auth.tasks",
    "jushostit.billing.tasks",
    "jushostit.reconcile.tasks",
    "jushostit.instances.tasks",
    "jushostit.webhooks.tasks",
    "jushostit.clusters.tasks",
    "jushostit.metering.tasks",
)


def open_container(settings: Settings, *, apply_migrations: bool = True) -> AbstractAsyncContextManager[Container]:
    return _open_container(
        settings, apply_migrations=apply_migrations, on_open=seed_catalog, task_modules=TASK_MODULES
    )
