from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime
from jushostit.models._columns import created_at_column, id_column


class Instance(Base):
    """A service a customer ordered. Desired level comes from entitlement; `observed_status` is what the
    runtime reported at `last_reconciled_at` — the API shows the latter, never the intent (REFERENCE §1 F6)."""

    __tablename__ = "instances"
    # A name is unique among the account's live instances; a deleted one (kept for history) releases it.
    __table_args__ = (
        Index("uq_instances_account_name", "account_id", "name", unique=True,
              postgresql_where=text("deleted_at IS NULL")),
        # The retention purge's sweep: expired instances not yet deleted.
        Index("ix_instances_live_expired_at", "expired_at", "account_id",
              postgresql_where=text("deleted_at IS NULL AND expired_at IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = id_column()
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    template_code: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    slug: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    tier: Mapped[str] = mapped_column(String(32), nullable=False)
    desired_level: Mapped[str] = mapped_column(String(16), nullable=False, default="running")
    observed_status: Mapped[str] = mapped_column(String(16), nullable=False, default="provisioning")
    status_reason: Mapped[str | None] = mapped_column(String(500))
    last_error: Mapped[str | None] = mapped_column(String(2000))
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_reconciled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when the reconciler last changed it
    first_ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    settled_status: Mapped[str | None] = mapped_column(String(16))  # the last status that was not `provisioning`
    delete_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = created_at_column()
