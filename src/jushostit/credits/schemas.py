from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from jushostit.kit.schemas import (
    MINOR_UNITS_MAX,
    DateTime,
    DisplayName,
    FromJsonString,
    RequestModel,
    ResponseModel,
)

# Credits are whole units; an amount fits BIGINT with room for sums (the same bound as minor units).
Credits = Annotated[int, Field(ge=1, le=MINOR_UNITS_MAX, description="Whole credits, at least 1")]
# Lower burns first (OpenMeter's order: priority, then soonest expiry, then oldest).
Priority = Annotated[int, Field(ge=0, le=255, description="Lower burns first; default 1")]
Reason = Annotated[DisplayName, Field(description="Why, for people reading the ledger")]
Reference = Annotated[DisplayName, Field(description="What it is about: an order, a payment, a ticket")]


class CreditGrantCreate(RequestModel):
    amount: Credits
    priority: Priority = 1
    expires_at: DateTime | None = Field(default=None, description="When what is left expires; null: never")
    reason: Reason
    reference: Reference | None = None


class CreditDebitCreate(RequestModel):
    amount: Credits
    reason: Reason
    reference: Reference | None = None


class CreditRefundCreate(RequestModel):
    entry_id: FromJsonString[uuid.UUID] = Field(description="The debit given back")
    amount: Credits | None = Field(default=None, description="Default: all of the debit not refunded yet")
    reason: Reason


class CreditGrantRead(ResponseModel):
    id: uuid.UUID
    source: str = Field(description="admin | plan | rollover | pack | refund")
    amount: int
    remaining: int
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    subscription_id: uuid.UUID | None
    reason: str
    reference: str | None
    created_at: datetime


class CreditEntryRead(ResponseModel):
    id: uuid.UUID
    account_id: uuid.UUID
    kind: str = Field(description="grant | debit | expiry | refund | rollover")
    delta: int = Field(description="Credits added (positive) or taken (negative); 0 for a rollover")
    balance_after: int
    reason: str
    reference: str | None
    grant_id: uuid.UUID | None
    allocations: list[dict[str, Any]] | None = Field(
        description="Debits and rollovers: the grants burnt, in order, as `{grant_id, amount}`"
    )
    refund_of: uuid.UUID | None
    created_at: datetime


class CreditsRead(ResponseModel):
    account_id: uuid.UUID
    balance: int = Field(description="Live credits now, read from the ledger's grants (expired ones excluded)")
    grants: list[CreditGrantRead] = Field(description="Live grants with credits left, in the order debits burn them")
    upcoming: list[CreditGrantRead] = Field(description="Grants that start later (a period paid ahead)")


class CreditChangeRead(ResponseModel):
    entry: CreditEntryRead | None = Field(description="The ledger entry; null for a grant that starts later")
    grant: CreditGrantRead | None = Field(description="The grant made (grants and refunds); null for a debit")
    balance: int = Field(description="The account's live credits after the change")


class CreditEntryPage(ResponseModel):
    items: list[CreditEntryRead]
    next_cursor: str | None
