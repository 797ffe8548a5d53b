"""invoices (Net-30): invoices, their lines, a number counter per year; payments of an invoice

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30

Invoices are numbered per year without gaps (`INV-2026-000001`): `invoice_counters` holds the last number of
each year, incremented by an upsert in the transaction that inserts the invoice, so a rolled-back create takes
its number back and concurrent creates wait for each other. A payment now pays either a subscription's period or
an invoice (exactly one of them); an invoice is paid once (unique `invoice_id`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invoices",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("memo", sa.String(length=1000), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("payment_reference", sa.String(length=200), nullable=True),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("void_reason", sa.String(length=200), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("total_minor >= 0", name=op.f("ck_invoices_total_not_negative")),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_invoices_seq_positive")),
        sa.CheckConstraint("status IN ('open', 'paid', 'void')", name=op.f("ck_invoices_status_known")),
        sa.CheckConstraint("due_at >= issued_at", name=op.f("ck_invoices_due_after_issue")),
        sa.CheckConstraint("(status = 'paid') = (paid_at IS NOT NULL)", name=op.f("ck_invoices_paid_at_when_paid")),
        sa.CheckConstraint("(status = 'void') = (voided_at IS NOT NULL)",
                           name=op.f("ck_invoices_voided_at_when_void")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_invoices_account_id_accounts"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_invoices_created_by_users"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("number", name=op.f("uq_invoices_number")),
        sa.UniqueConstraint("year", "seq", name="uq_invoices_year_seq"),
    )
    op.create_index("ix_invoices_account_id_id", "invoices", ["account_id", "id"])
    op.create_index("ix_invoices_open_due", "invoices", ["account_id", "due_at"],
                    postgresql_where=sa.text("status = 'open'"))
    op.create_table(
        "invoice_lines",
        sa.Column("invoice_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("quantity >= 1", name=op.f("ck_invoice_lines_quantity_positive")),
        sa.CheckConstraint("unit_amount_minor >= 0", name=op.f("ck_invoice_lines_unit_amount_not_negative")),
        sa.CheckConstraint("amount_minor = quantity * unit_amount_minor",
                           name=op.f("ck_invoice_lines_amount_is_quantity_times_unit")),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_lines_invoice_id_invoices"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("invoice_id", "position", name=op.f("pk_invoice_lines")),
    )
    op.create_table(
        "invoice_counters",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.CheckConstraint("last_seq >= 1", name=op.f("ck_invoice_counters_last_seq_positive")),
        sa.PrimaryKeyConstraint("year", name=op.f("pk_invoice_counters")),
    )

    op.alter_column("payments", "subscription_id", nullable=True)
    op.alter_column("payments", "period_start", nullable=True)
    op.alter_column("payments", "period_end", nullable=True)
    op.add_column("payments", sa.Column("invoice_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(op.f("fk_payments_invoice_id_invoices"), "payments", "invoices", ["invoice_id"], ["id"],
                          ondelete="CASCADE")
    op.create_unique_constraint(op.f("uq_payments_invoice_id"), "payments", ["invoice_id"])
    op.create_check_constraint(op.f("ck_payments_pays_one_thing"), "payments",
                               "(subscription_id IS NULL) <> (invoice_id IS NULL)")
    op.create_check_constraint(
        op.f("ck_payments_subscription_payment_has_period"), "payments",
        "subscription_id IS NULL OR (period_start IS NOT NULL AND period_end IS NOT NULL)",
    )


def downgrade() -> None:
    op.execute("DELETE FROM payments WHERE invoice_id IS NOT NULL")
    op.drop_constraint(op.f("ck_payments_subscription_payment_has_period"), "payments", type_="check")
    op.drop_constraint(op.f("ck_payments_pays_one_thing"), "payments", type_="check")
    op.drop_constraint(op.f("uq_payments_invoice_id"), "payments", type_="unique")
    op.drop_constraint(op.f("fk_payments_invoice_id_invoices"), "payments", type_="foreignkey")
    op.drop_column("payments", "invoice_id")
    op.alter_column("payments", "period_end", nullable=False)
    op.alter_column("payments", "period_start", nullable=False)
    op.alter_column("payments", "subscription_id", nullable=False)
    op.drop_table("invoice_counters")
    op.drop_table("invoice_lines")
    op.drop_index("ix_invoices_open_due", table_name="invoices")
    op.drop_index("ix_invoices_account_id_id", table_name="invoices")
    op.drop_table("invoices")
