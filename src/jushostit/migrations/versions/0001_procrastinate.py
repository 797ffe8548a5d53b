"""procrastinate 3.10 job schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21

procrastinate's schema cannot be applied twice, so it lives in a migration (REFERENCE §5). On a procrastinate
upgrade, add its own migration files as new revisions here.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = Path(__file__).resolve().parent.parent / "sql" / "procrastinate_3_10_0.sql"


def upgrade() -> None:
    # The raw DB-API cursor runs the multi-statement script as written ("%" in it is literal text).
    op.get_bind().connection.cursor().execute(SCHEMA.read_text())


def downgrade() -> None:
    raise NotImplementedError("procrastinate's schema has no downgrade")
