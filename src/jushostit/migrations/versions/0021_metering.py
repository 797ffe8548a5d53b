"""metering: collector runs, usage samples, daily usage, budget alerts, Stripe meter reports, counters; plans'
usage pricing; the budget's currency; the month's spend is computed from usage, no longer a stored counter

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metering_runs",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("collector", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("unmapped", sa.Integer(), nullable=False),
        sa.Column("errors", postgresql.JSONB(), nullable=False),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="metering_run_status"),
    )
    op.create_index("ix_metering_runs_latest", "metering_runs", ["collector", "scope", "status", "window_end"])
    op.create_table(
        "usage_samples",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("source_id", sa.String(400), nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=True),
        sa.Column("instance_id", sa.Uuid(), nullable=True),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("quantity", sa.Numeric(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("aggregated_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("source", "source_id", name="uq_usage_samples_source_id"),
    )
    op.create_index("ix_usage_samples_account_window", "usage_samples", ["account_id", "window_start"])
    op.create_index("ix_usage_samples_unaggregated", "usage_samples", ["id"],
                    postgresql_where=sa.text("aggregated_at IS NULL"))
    op.create_index("ix_usage_samples_recorded_at", "usage_samples", ["recorded_at"])
    op.create_table(
        "usage_daily",
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("sources", postgresql.ARRAY(sa.String(32)), nullable=False),
        sa.Column("quantities", postgresql.JSONB(), nullable=False),
        sa.Column("breakdown", postgresql.JSONB(), nullable=False),
        sa.Column("cost_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "budget_alerts",
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("month", sa.Date(), primary_key=True),
        sa.Column("threshold", sa.Integer(), primary_key=True),
        sa.Column("spent_minor", sa.BigInteger(), nullable=False),
        sa.Column("limit_minor", sa.BigInteger(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "meter_reports",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("identifier", sa.String(100), nullable=False),
        sa.Column("event_name", sa.String(100), nullable=False),
        sa.Column("customer", sa.String(255), nullable=False),
        sa.Column("reported_before", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'sent', 'unknown')", name="meter_report_status"),
        sa.CheckConstraint("value > 0", name="meter_report_positive"),
        sa.UniqueConstraint("account_id", "month", "reported_before", name="uq_meter_reports_sequence"),
        sa.UniqueConstraint("identifier", name="uq_meter_reports_identifier"),
    )
    op.create_table(
        "meter_counters",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("identity", sa.String(100), nullable=False),
        sa.Column("value", sa.Numeric(), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.add_column("plans", sa.Column("usage_pricing", postgresql.JSONB(), nullable=True))
    op.add_column("accounts", sa.Column("budget_currency", sa.String(3), nullable=True))
    op.drop_column("accounts", "month_spend_minor")


def downgrade() -> None:
    op.add_column("accounts", sa.Column("month_spend_minor", sa.BigInteger(), server_default=sa.text("0"),
                                        nullable=False))
    op.drop_column("accounts", "budget_currency")
    op.drop_column("plans", "usage_pricing")
    for table in ("meter_counters", "meter_reports", "budget_alerts", "usage_daily", "usage_samples",
                  "metering_runs"):
        op.drop_table(table)
