from __future__ import annotations

import uuid
from datetime import datetime

from jushostit.kit.schemas import Note, RequestModel, ResponseModel, from_json_string
from jushostit.models import AccountStatus, BillingMode, SuspensionReason


class SuspendRequest(RequestModel):
    reason: from_json_string(SuspensionReason)
    note: Note | None = None


class UnsuspendRequest(RequestModel):
    reason: from_json_string(SuspensionReason)


class BillingModeUpdate(RequestModel):
    billing_mode: from_json_string(BillingMode)


class AdminAccountRead(ResponseModel):
    id: uuid.UUID
    name: str
    status: AccountStatus
    suspension_reasons: list[str]
    billing_mode: BillingMode
    level: str
    reasons: list[str]
    access: str
    instances: int
    failing_instances: int
    last_error: str | None
    last_reconciled_at: datetime | None
    created_at: datetime


class AdminAccountPage(ResponseModel):
    items: list[AdminAccountRead]
    next_cursor: str | None


class ReconcileRequested(ResponseModel):
    account_id: uuid.UUID
    queued: bool
