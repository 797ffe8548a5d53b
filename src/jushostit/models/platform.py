from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime
from jushostit.models._columns import created_at_column, id_column


class Platform(Base):
    """A shared data platform seats are sold on (Hopsworks). Its admin API key is a stored secret (vault,
    owner_type `platform`), never a column."""

    __tablename__ = "platforms"
    __table_args__ = (
        CheckConstraint("kind IN ('hopsworks')", name="platform_kind"),
        CheckConstraint("edition IN ('community', 'enterprise')", name="platform_edition"),
    )

    id: Mapped[uuid.UUID] = id_column()
    name: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    base_url: Mapped[str] = mapped_column(String(2048), nullable=False)
    edition: Mapped[str] = mapped_column(String(16), nullable=False)
    # The most projects a seat holder may create, by their role in the account: {"owner": 5, "admin": 5,
    # "member": 0} (members work in the owner's projects).
    project_limits: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    # The registered cluster the platform runs its projects on: OpenCost's costs of the seat holders' project
    # namespaces there are billed to the seats' accounts. None: not metered.
    cluster_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("clusters.id", ondelete="SET NULL"), index=True)
    # Enterprise edition: the sign-in provider (a JUSHOSTIT_OIDC_PROVIDERS name) the platform trusts too. A seat
    # holder who signs in through it gets a remote OAuth user linked by their subject, with no password of its own.
    oidc_provider: Mapped[str | None] = mapped_column(String(64))
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)  # the connection test that passed
    created_at: Mapped[datetime] = created_at_column()
