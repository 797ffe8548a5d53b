from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import ConfigDict, Field

from jushostit.kit.schemas import (
    DisplayName,
    EmailAddress,
    FromJsonString,
    OpaqueToken,
    RequestModel,
    ResponseModel,
    not_nullable,
)
from jushostit.models import AccountStatus, BillingMode, Role


class AccountBilling(ResponseModel):
    """Shown to owners and admins only."""

    billing_mode: BillingMode
    billing_email: str | None
    contract_ref: str | None = Field(description="The CRM deal of the account's prepaid contract, if it has one")
    contract_ends_at: datetime | None = Field(description="When that contract ends: services stop then unless an "
                                              "operator extends it")
    budget_minor: int | None = Field(description="The monthly budget on usage charges (null: none): throttled at "
                                                 "100 %, suspended at 120 %")
    budget_currency: str | None
    month_spend_minor: int = Field(description="Usage charges this calendar month (UTC), computed from usage; "
                                               "the forecast is at GET /v1/accounts/{id}/spend")


class EntitlementQuotas(ResponseModel):
    cpu_millicores: int
    memory_mib: int
    storage_gib: int
    max_instances: int
    concurrent_sessions: int
    session_max_minutes: int


class AccountEntitlement(ResponseModel):
    """What the account's billing facts entitle it to now (DESIGN §2): shown to every member."""

    level: str  # running | throttled | stopped | expired | deleted
    reasons: list[str]
    warning_banner: str | None
    access: str  # full | read_only | none
    holds: list[str] = Field(description="Suspension holds in force: the stored ones and those the facts imply "
                                         "(billing: past due beyond the grace; budget: spend over the limit)")
    quotas: EntitlementQuotas


class AccountRead(ResponseModel):
    id: uuid.UUID
    name: str
    status: AccountStatus
    suspension_reasons: list[str]
    role: Role
    created_at: datetime
    billing: AccountBilling | None
    entitlement: AccountEntitlement | None = None  # absent only from the signup response


class AccountUpdate(RequestModel):
    model_config = ConfigDict(json_schema_extra=not_nullable("name"))  # may be left out, not cleared

    name: DisplayName | None = None
    billing_email: EmailAddress | None = None


class MemberRead(ResponseModel):
    user_id: uuid.UUID
    email: str
    role: Role
    joined_at: datetime


class MemberPage(ResponseModel):
    items: list[MemberRead]
    next_cursor: str | None


class MemberUpdate(RequestModel):
    role: FromJsonString[Role]


class InviteCreate(RequestModel):
    email: EmailAddress
    role: FromJsonString[Role] = Role.member


class InviteRead(ResponseModel):
    id: uuid.UUID
    account_id: uuid.UUID
    email: str
    role: Role
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


class InvitePage(ResponseModel):
    items: list[InviteRead]
    next_cursor: str | None


class InviteAccept(RequestModel):
    token: OpaqueToken
