from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, PrimaryKeyConstraint, Text
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime


class DunningNotice(Base):
    """One e-mail of a past-due episode (named by the instant it began). The primary key is the claim: a notice
    is inserted or ignored, so it goes out once however many reconcile passes see it due."""

    __tablename__ = "dunning_notices"
    __table_args__ = (
        PrimaryKeyConstraint("account_id", "episode", "kind", "step"),
        CheckConstraint(
            "kind IN ('payment_failed', 'reminder', 'suspension_warning', 'suspended', 'restored')",
            name="dunning_notices_kind",
        ),
    )

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    episode: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(Text)
    step: Mapped[int] = mapped_column(Integer)  # the reminder's number (1, 2, …); 0 for the other kinds
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
