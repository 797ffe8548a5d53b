"""Column helpers shared by the models."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import UTCDateTime, utcnow
from jushostit.kit.ids import new_id


def id_column() -> Mapped[uuid.UUID]:
    return mapped_column(primary_key=True, default=new_id)


def created_at_column() -> Mapped[datetime]:
    return mapped_column(UTCDateTime, default=utcnow, server_default=func.now(), nullable=False)
