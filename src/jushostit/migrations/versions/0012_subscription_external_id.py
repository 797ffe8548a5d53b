"""subscriptions.external_id: the provider's subscription (Stripe `sub_…`), unique

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29

A card subscription is linked to Stripe's once its checkout completes; every later event about that Stripe
subscription is applied to this row, found by this column.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subscriptions", sa.Column("external_id", sa.String(length=255), nullable=True))
    op.create_unique_constraint(op.f("uq_subscriptions_external_id"), "subscriptions", ["external_id"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_subscriptions_external_id"), "subscriptions", type_="unique")
    op.drop_column("subscriptions", "external_id")
