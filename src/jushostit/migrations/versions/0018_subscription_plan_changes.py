"""subscriptions count their plan changes

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29

A plan change at the payment provider is keyed on (subscription, changes so far, target price): a retry of one
change repeats nothing, and changing back and forth within a day is never mistaken for a retry.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subscriptions", sa.Column("plan_changes", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("subscriptions", "plan_changes")
