from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field

from jushostit.catalog.spec import Code
from jushostit.kit.schemas import (
    DateTime,
    DisplayName,
    FromJsonString,
    MinorUnits,
    RequestModel,
    ResponseModel,
)


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


class PlanChangeCreate(RequestModel):
    plan: Code  # the paid plan to change to (same currency and interval)


class PlanChangeRead(ResponseModel):
    subscription: SubscriptionRead
    # Paid off-platform: the prorated difference for the rest of the period, to bill (positive) or credit
    # (negative). Null when the payment provider prorates and charges it itself (Stripe).
    proration_minor: int | None
    # True while the provider waits for the prorated payment: the plan changes once it is paid.
    pending_payment: bool


class SubscriptionPage(ResponseModel):
    items: list[SubscriptionRead]
    next_cursor: str | None


class CancelAt(enum.StrEnum):
    period_end = "period_end"
    now = "now"


class SubscriptionCancel(RequestModel):
    at: FromJsonString[CancelAt] = CancelAt.period_end


# The period a renewal pays for, named by its start: the `current_period_end` the client saw. Naming it makes
# a retry harmless: a period that is paid already is not paid again.
PeriodStart = Annotated[
    DateTime,
    Field(description="Start of the period paid for: the subscription's `current_period_end` as last read."),
]


class SubscriptionRenew(RequestModel):
    period_start: PeriodStart | None = None  # default: the period after the current one


class PaymentRecord(RequestModel):
    """An off-platform payment of a subscription's next period, as an operator records it."""

    period_start: PeriodStart
    amount_minor: MinorUnits | None = Field(default=None, description="What was paid; default: the plan's price")
    external_reference: DisplayName | None = Field(default=None, description="The invoice or transfer number")


class BillingPortalRead(ResponseModel):
    url: str  # Stripe's customer portal, for this session only


class CreditPurchaseRead(ResponseModel):
    id: uuid.UUID
    account_id: uuid.UUID
    pack: str  # the pack's code
    credits: int
    price_minor: int
    currency: str
    provider: str  # stripe | manual
    status: str  # pending | paid | expired
    checkout_url: str | None  # where a card account pays (Stripe Checkout); null when paid off-platform
    payment_reference: str | None
    paid_at: datetime | None
    created_at: datetime


class CreditPurchasePage(ResponseModel):
    items: list[CreditPurchaseRead]
    next_cursor: str | None


class PackPaymentRecord(RequestModel):
    """An off-platform payment of a credit pack, as an operator records it."""

    payment_reference: DisplayName | None = Field(default=None, description="The invoice or transfer number")
