from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime, utcnow
from jushostit.models._columns import created_at_column, id_column


class StoredSecret(Base):
    """A secret we must be able to read back (generated credentials, kubeconfigs, provider keys), encrypted
    with the secret box. `jushostit keys rotate` re-encrypts every row with the first key."""

    __tablename__ = "stored_secrets"
    __table_args__ = (UniqueConstraint("owner_type", "owner_id", "name", name="uq_stored_secrets_owner_name"),)

    id: Mapped[uuid.UUID] = id_column()
    owner_type: Mapped[str] = mapped_column(String(32), nullable=False)
    owner_id: Mapped[uuid.UUID] = mapped_column(nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    ciphertext: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = created_at_column()
    rotated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, nullable=False)
