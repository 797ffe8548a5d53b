"""dunning notices: each e-mail of a past-due episode claimed once; accounts remember their open episode

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29

A past-due episode is named by the instant it began (`past_due_since`). Each notice of an episode (payment
failed, reminder n, suspension warning, suspended, restored) is one row, inserted or ignored, so a notice goes
out once however many passes see it due. `accounts.dunning_episode` is the episode notices went out for, until
it ends and its "restored" notice is claimed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dunning_notices",
        sa.Column("account_id", postgresql.UUID(as_uuid=True),
                  sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("episode", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "episode", "kind", "step"),
        sa.CheckConstraint(
            "kind IN ('payment_failed', 'reminder', 'suspension_warning', 'suspended', 'restored')",
            name="dunning_notices_kind",
        ),
    )
    op.add_column("accounts", sa.Column("dunning_episode", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("accounts", "dunning_episode")
    op.drop_table("dunning_notices")
