from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from jushostit.kit.schemas import ResponseModel


class AuditEntryRead(ResponseModel):
    seq: int
    created_at: datetime
    actor_type: str
    actor_id: uuid.UUID | None
    action: str
    target_type: str
    target_id: str | None
    account_id: uuid.UUID | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    ip: str | None
    request_id: str | None
    hash: str


class AuditPage(ResponseModel):
    items: list[AuditEntryRead]
    next_cursor: str | None
