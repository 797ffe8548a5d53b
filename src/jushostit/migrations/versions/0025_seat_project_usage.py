"""usage by seat holders' project: the project a sample is of, and the breakdown of a day by project

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("usage_samples", sa.Column("project", sa.String(255), nullable=True))
    op.add_column("usage_daily", sa.Column("project_breakdown", postgresql.JSONB(), nullable=False,
                                           server_default=sa.text("'{}'::jsonb")))


def downgrade() -> None:
    op.drop_column("usage_daily", "project_breakdown")
    op.drop_column("usage_samples", "project")
