"""Alembic environment: the URL comes from the caller (`jushostit migrate`, serve, tests), never from a file."""

from __future__ import annotations

import asyncio
from typing import Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from jushostit import models  # noqa: F401 - registers every table
from jushostit.kit.db import Base, UTCDateTime, create_engine

config = context.config


def render_item(type_: str, obj: object, autogen_context: AutogenContext) -> str | Literal[False]:
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False

target_metadata = Base.metadata


def ours(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """procrastinate's tables come from its own schema script (revision 0001), not from our models."""
    return not (name or "").startswith("procrastinate")


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_object=ours,
        render_item=render_item,
    )
    with context.begin_transaction():
        # Two processes starting at once (serve and migrate) must not both apply the same revision.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4868417)")
        context.run_migrations()


async def run_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic was started without a database URL (use `jushostit migrate`)")
    engine = create_engine(url, pool_size=1)
    async with engine.connect() as connection:
        await connection.run_sync(run_with)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `jushostit migrate`")

existing = config.attributes.get("connection")
if existing is not None:
    run_with(existing)
else:
    asyncio.run(run_online())
