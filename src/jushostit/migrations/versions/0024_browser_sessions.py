"""browser sessions lent from session pools

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

STATUSES = "('starting', 'active', 'ended')"
REASONS = "('ended', 'timeout', 'idle', 'credits_exhausted', 'suspended', 'crashed', 'start_failed')"


def upgrade() -> None:
    op.create_table(
        "browser_sessions",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("pool_id", sa.Uuid(), sa.ForeignKey("instances.id", ondelete="CASCADE"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("warm", sa.Boolean(), nullable=True),
        sa.Column("browser_id", sa.String(64), nullable=True),
        sa.Column("debit_entry_id", sa.Uuid(), nullable=True),
        sa.Column("refunded", sa.Boolean(), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("max_seconds", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("charged_seconds", sa.Integer(), nullable=False),
        sa.Column("warned_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_browser_sessions_token_hash"),
        sa.CheckConstraint(f"status IN {STATUSES}", name="browser_session_status"),
        sa.CheckConstraint(f"end_reason IS NULL OR end_reason IN {REASONS}", name="browser_session_end_reason"),
    )
    op.create_index("ix_browser_sessions_pool_id", "browser_sessions", ["pool_id"])
    op.create_index("ix_browser_sessions_open", "browser_sessions", ["account_id"],
                    postgresql_where=sa.text("status <> 'ended'"))
    op.create_index("uq_browser_sessions_idempotency", "browser_sessions", ["account_id", "idempotency_key"],
                    unique=True, postgresql_where=sa.text("idempotency_key IS NOT NULL"))


def downgrade() -> None:
    op.drop_table("browser_sessions")
