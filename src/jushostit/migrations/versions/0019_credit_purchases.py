"""credit packs bought: pending until their payment is confirmed, then paid once

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-29

A purchase keeps what was sold (credits, price, currency). The pending → paid compare-and-set is what grants
the credits, once, whichever path confirms the payment (Stripe's event, the periodic pull, an operator).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_purchases",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("account_id", postgresql.UUID(as_uuid=True),
                  sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("pack_code", sa.String(63), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
        sa.Column("price_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("checkout_session_id", sa.String(255), nullable=True, unique=True),
        sa.Column("checkout_url", sa.String(2048), nullable=True),
        sa.Column("payment_reference", sa.String(200), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("status IN ('pending', 'paid', 'expired')", name="credit_purchase_status"),
        sa.CheckConstraint("credits > 0 AND price_minor > 0", name="credit_purchase_positive"),
    )
    op.create_index("ix_credit_purchases_account_id", "credit_purchases", ["account_id"])


def downgrade() -> None:
    op.drop_table("credit_purchases")
