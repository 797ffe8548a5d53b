from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime
from jushostit.models._columns import id_column


class WebhookEventStatus(enum.StrEnum):
    pending = "pending"  # stored, waiting for (or between) processing attempts
    processed = "processed"  # applied
    ignored = "ignored"  # a type we do not act on: kept for the record
    unmatched = "unmatched"  # about a customer, plan or price we do not know: flagged for admins, not applied
    failed = "failed"  # every attempt failed: an admin reads `last_error` and replays it


class WebhookEvent(Base):
    """A provider's event as received, stored once: (provider, event id) is unique, so a redelivery inserts
    nothing and is not processed again (REFERENCE §1 F2). The payload is only a hint: processing re-reads the
    object it names from the provider."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_webhook_events_provider_event"),
        Index("ix_webhook_events_status_received", "status", "received_at"),
    )

    id: Mapped[uuid.UUID] = id_column()
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    event_id: Mapped[str] = mapped_column(String(255), nullable=False)
    event_type: Mapped[str] = mapped_column(String(255), nullable=False)
    object_id: Mapped[str | None] = mapped_column(String(255))  # the id of the object the event is about
    customer_ref: Mapped[str | None] = mapped_column(String(255))  # the provider's customer id, when it names one
    account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at_provider: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)  # the event's `created`
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    status: Mapped[str] = mapped_column(String(16), default=WebhookEventStatus.pending, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)
    last_error: Mapped[str | None] = mapped_column(String(2000))
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
