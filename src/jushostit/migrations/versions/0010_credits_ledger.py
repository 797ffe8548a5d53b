"""credits ledger: grants, append-only entries, a balance row per account; plans' included credits

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29

`credit_entries` is append-only at the database, like the audit log: triggers refuse UPDATE and TRUNCATE, and
DELETE except when the account itself is gone (its ledger is removed with it, by the foreign key's cascade).
`credit_balances.balance` and every entry's `balance_after` can never be negative (CHECK); a grant's
`remaining` stays between 0 and its amount.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("plans", sa.Column("included_credits", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("plans", sa.Column("credits_rollover", sa.Boolean(), server_default="false", nullable=False))
    op.add_column("plans", sa.Column("credits_rollover_cap", sa.BigInteger(), nullable=True))
    op.create_check_constraint(op.f("ck_plans_included_credits_not_negative"), "plans", "included_credits >= 0")
    op.create_check_constraint(
        op.f("ck_plans_credits_rollover_cap_not_negative"), "plans", "credits_rollover_cap >= 0"
    )

    op.create_table(
        "credit_balances",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("balance", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("balance >= 0", name=op.f("ck_credit_balances_balance_not_negative")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_credit_balances_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_credit_balances")),
    )
    op.create_table(
        "credit_grants",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("subscription_id", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_credit_grants_amount_positive")),
        sa.CheckConstraint("remaining >= 0 AND remaining <= amount",
                           name=op.f("ck_credit_grants_remaining_within_amount")),
        sa.CheckConstraint("priority >= 0 AND priority <= 255", name=op.f("ck_credit_grants_priority_range")),
        sa.CheckConstraint("expires_at IS NULL OR expires_at > effective_at",
                           name=op.f("ck_credit_grants_expires_after_start")),
        sa.CheckConstraint("source IN ('admin', 'plan', 'rollover', 'pack', 'refund')",
                           name=op.f("ck_credit_grants_source_known")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_credit_grants_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_grants")),
        sa.UniqueConstraint("account_id", "idempotency_key", name="uq_credit_grants_account_key"),
    )
    op.create_index("ix_credit_grants_account_subscription", "credit_grants", ["account_id", "subscription_id"])
    op.create_table(
        "credit_entries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("grant_id", sa.Uuid(), nullable=True),
        sa.Column("allocations", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("refund_of", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("balance_after >= 0", name=op.f("ck_credit_entries_balance_after_not_negative")),
        sa.CheckConstraint("kind IN ('grant', 'debit', 'expiry', 'refund', 'rollover')",
                           name=op.f("ck_credit_entries_kind_known")),
        sa.CheckConstraint(
            "(kind IN ('grant', 'refund') AND delta > 0) OR (kind IN ('debit', 'expiry') AND delta < 0)"
            " OR (kind = 'rollover' AND delta = 0)",
            name=op.f("ck_credit_entries_delta_sign_of_kind"),
        ),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_credit_entries_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["grant_id"], ["credit_grants.id"],
                                name=op.f("fk_credit_entries_grant_id_credit_grants"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["refund_of"], ["credit_entries.id"],
                                name=op.f("fk_credit_entries_refund_of_credit_entries"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_entries")),
        sa.UniqueConstraint("account_id", "idempotency_key", name="uq_credit_entries_account_key"),
    )
    op.create_index("ix_credit_entries_account_id_id", "credit_entries", ["account_id", "id"])
    op.create_index("ix_credit_entries_refund_of", "credit_entries", ["refund_of"])

    # The ledger is append-only at the database. A row goes only with its account (the cascade of deleting
    # the account runs after the account row is gone, so the check below lets exactly that through).
    op.execute(
        """
        CREATE FUNCTION credit_entries_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND NOT EXISTS (SELECT 1 FROM accounts WHERE id = OLD.account_id) THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'credit_entries is append-only (% refused)', TG_OP;
        END;
        $$;
        CREATE TRIGGER credit_entries_no_update_delete BEFORE UPDATE OR DELETE ON credit_entries
            FOR EACH ROW EXECUTE FUNCTION credit_entries_refuse_change();
        CREATE TRIGGER credit_entries_no_truncate BEFORE TRUNCATE ON credit_entries
            FOR EACH STATEMENT EXECUTE FUNCTION credit_entries_refuse_change();
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER credit_entries_no_truncate ON credit_entries")
    op.execute("DROP TRIGGER credit_entries_no_update_delete ON credit_entries")
    op.execute("DROP FUNCTION credit_entries_refuse_change()")
    op.drop_index("ix_credit_entries_refund_of", table_name="credit_entries")
    op.drop_index("ix_credit_entries_account_id_id", table_name="credit_entries")
    op.drop_table("credit_entries")
    op.drop_index("ix_credit_grants_account_subscription", table_name="credit_grants")
    op.drop_table("credit_grants")
    op.drop_table("credit_balances")
    op.drop_constraint(op.f("ck_plans_credits_rollover_cap_not_negative"), "plans", type_="check")
    op.drop_constraint(op.f("ck_plans_included_credits_not_negative"), "plans", type_="check")
    op.drop_column("plans", "credits_rollover_cap")
    op.drop_column("plans", "credits_rollover")
    op.drop_column("plans", "included_credits")
