from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime
from jushostit.models._columns import created_at_column, id_column


class ServiceTemplate(Base):
    """A service customers can order; `spec` is validated by catalog.spec.TemplateSpec on every write."""

    __tablename__ = "service_templates"

    id: Mapped[uuid.UUID] = id_column()
    code: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)  # builtin | admin
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = created_at_column()
