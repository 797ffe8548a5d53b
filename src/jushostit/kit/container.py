"""Process-wide wiring: settings, the database (embedded or DATABASE_URL), the secret box, the job app.

`serve`, `worker`, the CLI commands and the tests all open the same container, so every entry point runs on
the same code path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog

from jushostit.catalog.service import seed as seed_catalog
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
async def open_container(settings: Settings, *, apply_migrations: bool = True) -> AsyncIterator[Container]:
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
            async with database.unit_of_work() as session:  # shipped plans and templates (a broken one stops here)
                await seed_catalog(session)
            async with jobs.connected(libpq_url(url), max_size=settings.job_pool_size):
                yield container
        finally:
            _current = previous
            await database.engine.dispose()
