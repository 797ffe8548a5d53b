from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime
from jushostit.models._columns import created_at_column, id_column


class Payment(Base):
    """One payment: of a subscription's period, whichever path reports it (an operator, a free renewal, a
    provider's webhook or resync), or of an invoice. The unique (subscription, period_start) is what makes a
    period paid once: a second report of the same period inserts nothing and extends nothing (REFERENCE §1 F1);
    the unique invoice_id does the same for an invoice."""

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("subscription_id", "period_start", name="uq_payments_subscription_period"),
        CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
        CheckConstraint("(subscription_id IS NULL) <> (invoice_id IS NULL)", name="pays_one_thing"),
        CheckConstraint("subscription_id IS NULL OR (period_start IS NOT NULL AND period_end IS NOT NULL)",
                        name="subscription_payment_has_period"),
    )

    id: Mapped[uuid.UUID] = id_column()
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))
    invoice_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("invoices.id", ondelete="CASCADE"), unique=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    # A subscription's payment: the period end it extends — the paid period's start, or, when the subscription
    # had lapsed (or was pending), the moment it ended; the new period then begins at the payment. Null for an
    # invoice's payment.
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)  # paid through
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    provider: Mapped[str] = mapped_column(String(32), nullable=False)  # manual | stripe
    source: Mapped[str] = mapped_column(String(16), nullable=False)  # admin | customer | webhook | resync
    external_reference: Mapped[str | None] = mapped_column(String(200))  # an invoice or transfer number
    recorded_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = created_at_column()
