"""accounts.dunning_policy: an admin's overrides of the billing mode's dunning policy

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29

ISO 8601 durations by field (`grace`, `reminders`, `terminate_after`); null when the account follows its
billing mode's defaults.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("dunning_policy", postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column("accounts", "dunning_policy")
