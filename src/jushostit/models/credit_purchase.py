from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime
from jushostit.models._columns import created_at_column, id_column


class CreditPurchase(Base):
    """A credit pack an account asked to buy: pending until its payment is confirmed (Stripe's checkout, or an
    operator for off-platform billing), then paid once — the compare-and-set that grants the credits."""

    __tablename__ = "credit_purchases"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'paid', 'expired')", name="credit_purchase_status"),
        CheckConstraint("credits > 0 AND price_minor > 0", name="credit_purchase_positive"),
    )

    id: Mapped[uuid.UUID] = id_column()
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    pack_code: Mapped[str] = mapped_column(String(63), nullable=False)
    # What was sold, kept as it was: a later change of the pack's catalog entry changes no purchase.
    credits: Mapped[int] = mapped_column(BigInteger, nullable=False)
    price_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    provider: Mapped[str] = mapped_column(String(32), nullable=False)  # manual | stripe
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    checkout_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    checkout_url: Mapped[str | None] = mapped_column(String(2048))
    payment_reference: Mapped[str | None] = mapped_column(String(200))  # Stripe's payment, or a transfer number
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = created_at_column()
