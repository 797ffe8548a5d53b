from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from jushostit.kit.schemas import ResponseModel


class WebhookReceipt(ResponseModel):
    received: bool  # always true: the event is stored (now or before)
    event_id: str
    duplicate: bool  # true when this event was stored already (a redelivery): nothing new is processed


class WebhookEventRead(ResponseModel):
    id: uuid.UUID
    provider: str
    event_id: str
    type: str
    object_id: str | None
    customer_ref: str | None  # the provider's customer the event names
    account_id: uuid.UUID | None  # the account it was matched to
    status: str  # pending | processed | ignored | unmatched | failed
    attempts: int
    last_error: str | None
    created_at_provider: datetime
    received_at: datetime
    processed_at: datetime | None


class WebhookEventDetail(WebhookEventRead):
    payload: dict[str, Any]


class WebhookEventPage(ResponseModel):
    items: list[WebhookEventRead]
    next_cursor: str | None
