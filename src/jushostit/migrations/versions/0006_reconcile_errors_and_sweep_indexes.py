"""accounts remember their last reconcile error; instances when they were first ready; the sweeps use indexes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The full error of the account's last failed pass, for admins (customers see a short safe reason).
    op.add_column("accounts", sa.Column("reconcile_error", sa.String(2000), nullable=True))
    op.add_column("accounts", sa.Column("reconcile_error_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("accounts", sa.Column("reconcile_failures", sa.Integer(), nullable=False, server_default="0"))
    # When an instance first answered its health check: "ready" is mailed once, not after every restart.
    op.add_column("instances", sa.Column("first_ready_at", sa.DateTime(timezone=True), nullable=True))
    # The last status that was not a transition (provisioning): a process started again after a crash is
    # not "restored", one started after a suspension is.
    op.add_column("instances", sa.Column("settled_status", sa.String(16), nullable=True))
    op.execute("UPDATE instances SET first_ready_at = last_reconciled_at WHERE observed_status IN ('running', 'throttled')")
    op.execute("UPDATE instances SET settled_status = observed_status WHERE observed_status <> 'provisioning'")
    # The expiry-notice sweep scans active subscriptions by period end; the retention purge expired instances;
    # the idempotency purge keys by age.
    op.create_index("ix_subscriptions_active_period_end", "subscriptions", ["current_period_end"],
                    postgresql_where=sa.text("status = 'active'"))
    op.create_index("ix_instances_live_expired_at", "instances", ["expired_at", "account_id"],
                    postgresql_where=sa.text("deleted_at IS NULL AND expired_at IS NOT NULL"))
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_index("ix_instances_live_expired_at", table_name="instances")
    op.drop_index("ix_subscriptions_active_period_end", table_name="subscriptions")
    op.drop_column("instances", "settled_status")
    op.drop_column("instances", "first_ready_at")
    op.drop_column("accounts", "reconcile_failures")
    op.drop_column("accounts", "reconcile_error_at")
    op.drop_column("accounts", "reconcile_error")
