from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import Field

from jushostit.kit.schemas import DateTime, FromJsonString, IsoDuration, Note, RequestModel, ResponseModel
from jushostit.models import AccountStatus, BillingMode, SuspensionReason


class SuspendRequest(RequestModel):
    reason: FromJsonString[SuspensionReason]
    note: Note | None = None


class UserSuspendRequest(RequestModel):
    note: Note | None = None


class UnsuspendRequest(RequestModel):
    reason: FromJsonString[SuspensionReason]


class BillingModeUpdate(RequestModel):
    billing_mode: FromJsonString[BillingMode]


class AdminAccountRead(ResponseModel):
    id: uuid.UUID
    name: str
    status: AccountStatus = Field(description="Derived from the billing facts at read time")
    suspension_reasons: list[str] = Field(description="Holds set by people (admins, the contract); lift them one by one")
    holds: list[str] = Field(description="Every hold in force: the stored ones and those the facts imply "
                                         "(billing: past due beyond the grace; budget: spend over the limit)")
    billing_mode: BillingMode
    contract_ref: str | None = Field(description="The CRM deal (HubSpot) of the account's prepaid contract")
    contract_ends_at: datetime | None = Field(description="When that contract ends: held (`contract`) from then on")
    level: str
    reasons: list[str]
    access: str
    instances: int = Field(description="Its instances not deleted")
    failing_instances: int = Field(description="Of those, the ones observed `failed` or whose last apply failed")
    last_error: str | None = Field(description="The problem of the failing instance reconciled last: its error "
                                   "(full text, admins only), or else its status reason")
    last_reconciled_at: datetime | None
    reconcile_error: str | None = Field(description="Why the account's last reconcile pass failed (full text); "
                                        "cleared by the next pass that succeeds")
    reconcile_error_at: datetime | None
    reconcile_failures: int = Field(description="Passes failed in a row (each retried with backoff)")
    created_at: datetime


class AdminAccountPage(ResponseModel):
    items: list[AdminAccountRead]
    next_cursor: str | None


class ReconcileRequested(ResponseModel):
    account_id: uuid.UUID
    queued: bool


class AdminUserRead(ResponseModel):
    id: uuid.UUID
    email: str
    is_platform_admin: bool
    suspended_at: datetime | None = Field(description="Set while the user is suspended: no sign-in, and every "
                                          "token and API key of theirs answers 401 `user_suspended`")
    created_at: datetime


# An ISO 8601 duration (`P7D`, `PT30S`): from a second (a test on a running server) to ten years.
Duration = Annotated[
    IsoDuration,
    Field(ge=timedelta(seconds=1), le=timedelta(days=3650), description="ISO 8601 duration, e.g. `P7D` or `PT30S`"),
]


class DunningPolicyUpdate(RequestModel):
    """The account's overrides; a field left out takes the billing mode's default again."""

    grace: Duration | None = Field(
        default=None, description="Past due for this long → suspended (reason `billing`)")
    reminders: Annotated[list[Duration], Field(max_length=10)] | None = Field(
        default=None, description="After each of these, past due, a reminder is e-mailed; each shorter than the grace")
    terminate_after: Duration | None = Field(
        default=None, description="Suspended for billing this long → terminated; `null` for never")


class DunningPolicyRead(ResponseModel):
    account_id: uuid.UUID
    billing_mode: BillingMode
    grace: IsoDuration
    reminders: list[IsoDuration]
    terminate_after: IsoDuration | None = Field(description="null: never terminated automatically")
    sources: dict[str, str] = Field(description="Where each value comes from: `account` (an override) or "
                                              "`default:<billing mode>`")


class ContractUpdate(RequestModel):
    ends_at: DateTime = Field(description="The contract's new end (RFC 3339 with an offset); an instant already "
                              "past ends it now")
