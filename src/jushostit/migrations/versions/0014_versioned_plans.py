"""plans are versioned; a subscription keeps the terms it was sold with

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29

`plans.version` is raised by every change of what a subscription buys. Each subscription stores the terms of
the version it was sold (`plan_version`, `price_minor`, `currency`, `interval`, `quotas`, `stripe_price_id`):
renewals, payments and quotas read those, so editing a plan changes nothing existing subscribers bought.
Existing subscriptions take their plan's current terms as version 1.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TERMS = ("price_minor", "currency", "interval", "quotas")


def upgrade() -> None:
    op.add_column("plans", sa.Column("version", sa.Integer(), server_default="1", nullable=False))
    op.add_column("subscriptions", sa.Column("plan_version", sa.Integer(), nullable=True))
    op.add_column("subscriptions", sa.Column("price_minor", sa.BigInteger(), nullable=True))
    op.add_column("subscriptions", sa.Column("currency", sa.String(length=3), nullable=True))
    op.add_column("subscriptions", sa.Column("interval", sa.String(length=16), nullable=True))
    op.add_column("subscriptions", sa.Column("quotas", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("subscriptions", sa.Column("stripe_price_id", sa.String(length=100), nullable=True))
    op.execute(
        "UPDATE subscriptions s SET plan_version = 1, price_minor = p.price_minor, currency = p.currency,"
        " interval = p.interval, quotas = p.quotas, stripe_price_id = p.stripe_price_id"
        " FROM plans p WHERE p.id = s.plan_id"
    )
    for column in ("plan_version", *TERMS):
        op.alter_column("subscriptions", column, nullable=False)


def downgrade() -> None:
    for column in ("stripe_price_id", *reversed(TERMS), "plan_version"):
        op.drop_column("subscriptions", column)
    op.drop_column("plans", "version")
