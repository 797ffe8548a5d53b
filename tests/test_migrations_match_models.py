"""The migrations and the models describe the same schema: after `alembic upgrade head`, Alembic's autogenerate
finds nothing to change (procrastinate's own tables, which its migrations create, aside). A column, index or
constraint added on one side only fails here."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import jushostit.models  # noqa: F401 - registers every table on Base.metadata
from jushostit.kit.db import Base


def _outside_procrastinate(diff: Any) -> bool:
    changes = diff if isinstance(diff, list) else [diff]
    return not all("procrastinate" in repr(change) for change in changes)


async def test_the_migrated_schema_is_the_models_schema(container) -> None:
    async with container.database.engine.connect() as connection:

        def differences(sync_connection: Any) -> list[Any]:
            context = MigrationContext.configure(sync_connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))

        found = await connection.run_sync(differences)
    assert [d for d in found if _outside_procrastinate(d)] == []
