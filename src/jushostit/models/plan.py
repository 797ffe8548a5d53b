from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, BigInteger, Boolean, CheckConstraint, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime
from jushostit.models._columns import created_at_column, id_column


class Plan(Base):
    """What a subscription buys: a price in minor units and the quotas it grants."""

    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint("included_credits >= 0", name="included_credits_not_negative"),
        CheckConstraint("credits_rollover_cap >= 0", name="credits_rollover_cap_not_negative"),
    )

    id: Mapped[uuid.UUID] = id_column()
    code: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    price_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    interval: Mapped[str] = mapped_column(String(16), nullable=False)
    billing_modes: Mapped[list[str]] = mapped_column(ARRAY(String(16)), nullable=False)
    quotas: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    default_budget_minor: Mapped[int | None] = mapped_column(BigInteger)
    # Credits each paid period brings (credits.service.grant_period_credits): they expire at the period end
    # (reset), or what is left carries into the next period, at most `credits_rollover_cap` (none: all of it).
    included_credits: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    credits_rollover: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default="false")
    credits_rollover_cap: Mapped[int | None] = mapped_column(BigInteger)
    # What usage costs on this plan (catalog.spec.UsagePricing): included quantities and unit prices, or a
    # markup on OpenCost's costs. None: usage is measured, not charged.
    usage_pricing: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    stripe_price_id: Mapped[str | None] = mapped_column(String(100))
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Raised by every change of what a subscription buys (price, currency, interval, quotas, Stripe price):
    # subscriptions keep the terms of the version they were sold.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1", nullable=False)
    created_at: Mapped[datetime] = created_at_column()
