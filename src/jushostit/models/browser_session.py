from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime
from jushostit.models._columns import created_at_column, id_column

SESSION_STATUSES = ("starting", "active", "ended")
END_REASONS = ("ended", "timeout", "idle", "credits_exhausted", "suspended", "crashed", "start_failed")


class BrowserSession(Base):
    """A browser lent to a customer from one of their session pools, reached through our CDP proxy with a
    per-session token (only its hash is kept). One credit is debited when it is asked for and refunded when it
    could not start."""

    __tablename__ = "browser_sessions"
    __table_args__ = (
        CheckConstraint(f"status IN {SESSION_STATUSES}", name="browser_session_status"),
        CheckConstraint(f"end_reason IS NULL OR end_reason IN {END_REASONS}", name="browser_session_end_reason"),
        # The sessions an account has open: counted against its concurrency on every request.
        Index("ix_browser_sessions_open", "account_id", postgresql_where=text("status <> 'ended'")),
        Index("uq_browser_sessions_idempotency", "account_id", "idempotency_key", unique=True,
              postgresql_where=text("idempotency_key IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = id_column()
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False)
    pool_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="starting")
    end_reason: Mapped[str | None] = mapped_column(String(32))
    warm: Mapped[bool | None] = mapped_column(Boolean)  # taken from the warm pool (or started for it)
    browser_id: Mapped[str | None] = mapped_column(String(64))  # the serve process's browser
    debit_entry_id: Mapped[uuid.UUID | None] = mapped_column()  # the credit taken for it
    refunded: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    max_seconds: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int | None] = mapped_column(Integer)  # started to ended: what is billed (per second)
    charged_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # per-second billing: paid
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # told its credits are about to run out
