from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime
from jushostit.models._columns import created_at_column, id_column


class Subscription(Base):
    """A billing fact: which plan an account pays for and the period it covers."""

    __tablename__ = "subscriptions"
    # The renewal sweep: active subscriptions by the end of their period.
    __table_args__ = (
        Index("ix_subscriptions_active_period_end", "current_period_end", postgresql_where=text("status = 'active'")),
    )

    id: Mapped[uuid.UUID] = id_column()
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id"), nullable=False)
    provider: Mapped[str] = mapped_column(String(32), nullable=False)  # manual | stripe
    # The terms it was sold with (the plan's version at checkout): a later edit of the plan changes none of them.
    plan_version: Mapped[int] = mapped_column(Integer, nullable=False)
    price_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    interval: Mapped[str] = mapped_column(String(16), nullable=False)
    quotas: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    stripe_price_id: Mapped[str | None] = mapped_column(String(100))
    # How many times its plan changed: names the next change at the provider (see migration 0018).
    plan_changes: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # pending | active | cancelled
    current_period_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    current_period_end: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False, nullable=False)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The period end the "expiring in 3 days" notice went out for: one notice per period, never two.
    expiry_notice_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The provider's own subscription (Stripe `sub_…`), once the checkout completed: its records are the truth.
    external_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    # A hosted checkout (Stripe Checkout): the provider's session, where the customer pays, and until when.
    checkout_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    checkout_url: Mapped[str | None] = mapped_column(String(2048))
    checkout_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = created_at_column()
