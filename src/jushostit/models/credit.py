"""The credits ledger (issue 9 §9): grants, the append-only entries and each account's balance row.

Credits are whole units (integers). A grant is a lot of credits with a priority, an optional expiry and a
start (`effective_at`; a renewal paid ahead grants the next period's credits from its start). Its `remaining`
is what debits have not burnt yet: grants are the working state, entries are the record. Every change of an
account's balance is one `credit_entries` row with the balance after it; database triggers refuse UPDATE,
DELETE (except with the account itself) and TRUNCATE of that table (see the migration). `credit_balances` is
the balance the entries add up to, maintained in the same transactions — its row is the account's credit
lock, and its conditional update the gate that a debit never overdraws.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime, utcnow
from jushostit.models._columns import created_at_column, id_column

GRANT_SOURCES = ("admin", "plan", "rollover", "pack", "refund")
ENTRY_KINDS = ("grant", "debit", "expiry", "refund", "rollover")


class CreditBalance(Base):
    """The account's live credits once every due grant start and expiry is written to the ledger."""

    __tablename__ = "credit_balances"
    __table_args__ = (CheckConstraint("balance >= 0", name="balance_not_negative"),)

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    balance: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class CreditGrant(Base):
    """A lot of credits. Debits burn live grants by priority (lower first), then soonest expiry (none last),
    then oldest (OpenMeter's order). `posted_at`: when its entry was written (its start was reached);
    `expired_at`: when what was left of it was written off at its expiry."""

    __tablename__ = "credit_grants"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining_within_amount"),
        CheckConstraint("priority >= 0 AND priority <= 255", name="priority_range"),
        CheckConstraint("expires_at IS NULL OR expires_at > effective_at", name="expires_after_start"),
        CheckConstraint(f"source IN {GRANT_SOURCES!r}", name="source_known"),
        # A grant operation repeated with its key (an admin's retry, a renewal reported twice) finds this row.
        UniqueConstraint("account_id", "idempotency_key", name="uq_credit_grants_account_key"),
        Index("ix_credit_grants_account_subscription", "account_id", "subscription_id"),
    )

    id: Mapped[uuid.UUID] = id_column()
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)  # admin | plan | rollover | pack | refund
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    remaining: Mapped[int] = mapped_column(BigInteger, nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The plan credits of which subscription (plan and rollover grants); a plain id, the grant outlives it.
    subscription_id: Mapped[uuid.UUID | None] = mapped_column()
    reason: Mapped[str] = mapped_column(String(200), nullable=False)
    reference: Mapped[str | None] = mapped_column(String(200))  # a payment, an order, a refunded entry
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = created_at_column()


class CreditEntry(Base):
    """One change of an account's credits, never edited: `grant` (a grant's start), `debit`, `expiry` (what
    was left of a grant at its expiry), `refund` (a new grant given back for a debit, `refund_of` naming it)
    and `rollover` (plan credits carried into the next period: the balance does not change, `allocations`
    says from which grants)."""

    __tablename__ = "credit_entries"
    __table_args__ = (
        CheckConstraint("balance_after >= 0", name="balance_after_not_negative"),
        CheckConstraint(f"kind IN {ENTRY_KINDS!r}", name="kind_known"),
        CheckConstraint(
            "(kind IN ('grant', 'refund') AND delta > 0) OR (kind IN ('debit', 'expiry') AND delta < 0)"
            " OR (kind = 'rollover' AND delta = 0)",
            name="delta_sign_of_kind",
        ),
        UniqueConstraint("account_id", "idempotency_key", name="uq_credit_entries_account_key"),
        Index("ix_credit_entries_account_id_id", "account_id", "id"),
        Index("ix_credit_entries_refund_of", "refund_of"),
    )

    id: Mapped[uuid.UUID] = id_column()
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    delta: Mapped[int] = mapped_column(BigInteger, nullable=False)
    balance_after: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason: Mapped[str] = mapped_column(String(200), nullable=False)
    reference: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    grant_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("credit_grants.id", ondelete="CASCADE"))
    # Debits and rollovers: [{"grant_id": "...", "amount": n}, ...] in the order the grants were burnt.
    allocations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    refund_of: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("credit_entries.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = created_at_column()
