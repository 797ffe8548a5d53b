"""Process-wide wiring: settings, the database (embedded or DATABASE_URL), the secret box, the job app.

`serve`, `worker`, the CLI commands and the tests all open the same container, so every entry point runs on
the same code path. It knows no domain: what the application adds at start-up (the shipped catalog, its task
modules) comes from the caller, `jushostit.bootstrap`. Entry points (endpoints, tasks) read it through
`current()`; services never do, they take what they need as arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.config import Settings, generated_secrets_path, resolve_secrets
from jushostit.kit import embedded_pg, jobs, migrate
from jushostit.kit.crypto import SecretBox
from jushostit.kit.db import Database, libpq_url

log = structlog.get_logger(__name__)

EMBEDDED_DATABASE = "jushostit"


@dataclass
class Container:
    settings: Settings
    database: Database
    database_url: str
    secret_box: SecretBox
    jwt_secret: str


_current: Container | None = None


def current() -> Container:
    if _current is None:
        raise RuntimeError("the container is not open")
    return _current


@contextlib.contextmanager
def database_url(settings: Settings) -> Any:
    """Yield the database URL: DATABASE_URL, or the embedded server (stopped on exit if we were its last user)."""
    if settings.database_url:
        yield settings.database_url
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_pg.start(settings.data_dir / "pg")
    try:
        embedded_pg.ensure_database(server, EMBEDDED_DATABASE)
        yield embedded_pg.database_url(server, EMBEDDED_DATABASE)
    finally:
        server.cleanup()


@contextlib.asynccontextmanager
async def open_container(
    settings: Settings,
    *,
    apply_migrations: bool = True,
    on_open: Callable[[AsyncSession], Awaitable[object]] | None = None,
    task_modules: Sequence[str] = (),
) -> AsyncIterator[Container]:
    """`on_open` runs in one unit of work before the job app connects (a failure stops the start-up);
    `task_modules` are imported when it does."""
    global _current
    with database_url(settings) as url:
        if apply_migrations:
            await asyncio.to_thread(migrate.upgrade, url)
        keys, jwt_secret, generated = resolve_secrets(settings)
        if generated:
            log.warning(
                "secrets.generated_keys_in_use",
                path=str(generated_secrets_path(settings)),
                hint="set JUSHOSTIT_SECRET_KEYS and JUSHOSTIT_JWT_SECRET in production; back up this file",
            )
        database = Database.from_url(url, pool_size=settings.db_pool_size)
        container = Container(settings, database, url, SecretBox(keys), jwt_secret)
        previous, _current = _current, container
        try:
            if on_open is not None:
                async with database.unit_of_work() as session:
                    await on_open(session)
            async with jobs.connected(libpq_url(url), max_size=settings.job_pool_size, task_modules=task_modules):
                yield container
        finally:
            _current = previous
            await database.engine.dispose()
