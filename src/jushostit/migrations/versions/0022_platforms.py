"""shared data platforms seats are sold on (Hopsworks); their admin API keys are stored secrets

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "platforms",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("base_url", sa.String(2048), nullable=False),
        sa.Column("edition", sa.String(16), nullable=False),
        sa.Column("project_limits", postgresql.JSONB(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("name", name="uq_platforms_name"),
        sa.CheckConstraint("kind IN ('hopsworks')", name="platform_kind"),
        sa.CheckConstraint("edition IN ('community', 'enterprise')", name="platform_edition"),
    )


def downgrade() -> None:
    op.drop_table("platforms")
