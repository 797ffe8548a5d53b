"""Invoices of accounts billed `invoice` (Net-30): numbered per year without gaps, their lines, and the counter
that numbers them.

An invoice's total is the sum of its lines, each `quantity * unit_amount_minor`, computed by the server in
integers and stored. An open invoice past its due date makes its account past due from that date (billing.facts);
paying it (one `payments` row, unique per invoice) or voiding it ends that.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jushostit.kit.db import Base, UTCDateTime
from jushostit.models._columns import created_at_column, id_column


class InvoiceStatus(enum.StrEnum):
    open = "open"
    paid = "paid"
    void = "void"


class Invoice(Base):
    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("year", "seq", name="uq_invoices_year_seq"),
        CheckConstraint("total_minor >= 0", name="total_not_negative"),
        CheckConstraint("seq >= 1", name="seq_positive"),
        CheckConstraint("status IN ('open', 'paid', 'void')", name="status_known"),
        CheckConstraint("due_at >= issued_at", name="due_after_issue"),
        CheckConstraint("(status = 'paid') = (paid_at IS NOT NULL)", name="paid_at_when_paid"),
        CheckConstraint("(status = 'void') = (voided_at IS NOT NULL)", name="voided_at_when_void"),
        Index("ix_invoices_account_id_id", "account_id", "id"),
        # The entitlement's question, asked on every reconcile: the due date of the account's oldest open invoice.
        Index("ix_invoices_open_due", "account_id", "due_at", postgresql_where=text("status = 'open'")),
    )

    id: Mapped[uuid.UUID] = id_column()
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False)
    number: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)  # INV-2026-000001
    year: Mapped[int] = mapped_column(Integer, nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)  # 1, 2, … within the year, without gaps
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    total_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(8), nullable=False, default=InvoiceStatus.open.value)
    memo: Mapped[str | None] = mapped_column(String(1000))  # printed on the invoice (an order number, terms)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    payment_reference: Mapped[str | None] = mapped_column(String(200))  # the transfer's reference
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    void_reason: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = created_at_column()

    lines: Mapped[list[InvoiceLine]] = relationship(
        order_by="InvoiceLine.position", lazy="selectin", cascade="all, delete-orphan"
    )


class InvoiceLine(Base):
    __tablename__ = "invoice_lines"
    __table_args__ = (
        CheckConstraint("quantity >= 1", name="quantity_positive"),
        CheckConstraint("unit_amount_minor >= 0", name="unit_amount_not_negative"),
        CheckConstraint("amount_minor = quantity * unit_amount_minor", name="amount_is_quantity_times_unit"),
    )

    invoice_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("invoices.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1, 2, … as the lines were given
    description: Mapped[str] = mapped_column(String(200), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    unit_amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)


class InvoiceCounter(Base):
    """The last number given in a year. Taken with an upsert that increments it in the transaction that inserts
    the invoice: its row lock orders concurrent creates, and a rolled-back create takes its number back."""

    __tablename__ = "invoice_counters"
    __table_args__ = (CheckConstraint("last_seq >= 1", name="last_seq_positive"),)

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(Integer, nullable=False)
