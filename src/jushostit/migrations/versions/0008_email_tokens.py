"""email_tokens: single-use e-mailed secrets for address verification and password reset; outbox by address

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "email_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_email_tokens_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_email_tokens_token_hash")),
    )
    op.create_index("ix_email_tokens_user_id_created_at", "email_tokens", ["user_id", "created_at"], unique=False)
    # The per-address e-mail limit counts an address's recent e-mails.
    op.create_index("ix_email_outbox_to_address_created_at", "email_outbox", ["to_address", "created_at"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_email_outbox_to_address_created_at", table_name="email_outbox")
    op.drop_index("ix_email_tokens_user_id_created_at", table_name="email_tokens")
    op.drop_table("email_tokens")
