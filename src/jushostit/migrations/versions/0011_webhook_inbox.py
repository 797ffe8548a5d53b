"""webhook inbox: provider events stored once; accounts know their payment provider's customer; hosted checkouts

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29

`webhook_events` is unique on (provider, event id): a redelivered event inserts nothing and is processed once.
`accounts.provider_customer_id` (Stripe's `cus_…`) is unique: one customer per account, and an event is
matched to its account by it. A pending subscription keeps its hosted checkout (Stripe's Checkout Session id,
unique; its URL and expiry), so a retried checkout answers the same one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("provider_customer_id", sa.String(length=255), nullable=True))
    op.create_unique_constraint(op.f("uq_accounts_provider_customer_id"), "accounts", ["provider_customer_id"])
    op.add_column("subscriptions", sa.Column("checkout_session_id", sa.String(length=255), nullable=True))
    op.add_column("subscriptions", sa.Column("checkout_url", sa.String(length=2048), nullable=True))
    op.add_column("subscriptions", sa.Column("checkout_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_unique_constraint(op.f("uq_subscriptions_checkout_session_id"), "subscriptions", ["checkout_session_id"])
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=255), nullable=False),
        sa.Column("object_id", sa.String(length=255), nullable=True),
        sa.Column("customer_ref", sa.String(length=255), nullable=True),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at_provider", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(length=2000), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_webhook_events_account_id_accounts"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
        sa.UniqueConstraint("provider", "event_id", name="uq_webhook_events_provider_event"),
    )
    op.create_index(op.f("ix_webhook_events_account_id"), "webhook_events", ["account_id"], unique=False)
    op.create_index("ix_webhook_events_status_received", "webhook_events", ["status", "received_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_webhook_events_status_received", table_name="webhook_events")
    op.drop_index(op.f("ix_webhook_events_account_id"), table_name="webhook_events")
    op.drop_table("webhook_events")
    op.drop_constraint(op.f("uq_subscriptions_checkout_session_id"), "subscriptions", type_="unique")
    op.drop_column("subscriptions", "checkout_expires_at")
    op.drop_column("subscriptions", "checkout_url")
    op.drop_column("subscriptions", "checkout_session_id")
    op.drop_constraint(op.f("uq_accounts_provider_customer_id"), "accounts", type_="unique")
    op.drop_column("accounts", "provider_customer_id")
