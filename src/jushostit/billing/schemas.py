from __future__ import annotations

import enum
import uuid
from datetime import datetime

from jushostit.catalog.spec import Code
from jushostit.kit.schemas import RequestModel, ResponseModel, from_json_string


class CheckoutCreate(RequestModel):
    plan: Code  # a plan code


class SubscriptionRead(ResponseModel):
    id: uuid.UUID
    account_id: uuid.UUID
    plan: str  # the plan's code
    provider: str
    status: str  # pending | active | cancelled
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool
    cancelled_at: datetime | None
    created_at: datetime


class CheckoutRead(ResponseModel):
    subscription: SubscriptionRead
    checkout_url: str | None  # set when the customer pays at the provider (Stripe); null when free or manual


class SubscriptionPage(ResponseModel):
    items: list[SubscriptionRead]
    next_cursor: str | None


class CancelAt(enum.StrEnum):
    period_end = "period_end"
    now = "now"


class SubscriptionCancel(RequestModel):
    at: from_json_string(CancelAt) = CancelAt.period_end
