from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, status
from fastapi.responses import Response

from jushostit.auth.dependencies import (
    AccountAccess,
    PlatformAdmin,
    require_account,
)
from jushostit.auth.scopes import Scope
from jushostit.credits import service
from jushostit.credits.repository import CreditsRepository
from jushostit.credits.schemas import (
    CreditChangeRead,
    CreditDebitCreate,
    CreditEntryPage,
    CreditEntryRead,
    CreditGrantCreate,
    CreditGrantRead,
    CreditRefundCreate,
    CreditsRead,
)
from jushostit.idempotency import IdempotencyDep
from jushostit.kit import errors
from jushostit.kit.db import SessionDep
from jushostit.kit.errors import responses
from jushostit.kit.pagination import Paging, split_page
from jushostit.models import Role

router = APIRouter(prefix="/v1", tags=["credits"])

# As billing: owners and admins of the account read its credits; other tenants get 404.
CreditsReader = Annotated[AccountAccess, Depends(require_account(Scope.billing_read, Role.admin))]

IDEMPOTENCY_CONFLICTS = {
    "idempotency_key_reused": "the `Idempotency-Key` was used for another request",
    "idempotency_key_in_use": "a request with this `Idempotency-Key` is still running",
}


def conflicts(codes: dict[str, str]) -> dict[int | str, dict[str, Any]]:
    return errors.conflicts({**codes, **IDEMPOTENCY_CONFLICTS})


def change_read(change: service.CreditChange) -> CreditChangeRead:
    return CreditChangeRead(
        entry=CreditEntryRead.model_validate(change.entry) if change.entry else None,
        grant=CreditGrantRead.model_validate(change.grant) if change.grant else None,
        balance=change.balance,
    )


@router.get("/accounts/{account_id}/credits", response_model=CreditsRead, responses=responses(401, 403, 404))
async def read_credits(access: CreditsReader, session: SessionDep) -> CreditsRead:
    """The account's credits now, read from the ledger's grants at once (expired credits excluded): the balance,
    the live grants in the order debits burn them, and the grants that start later."""
    balance, live, upcoming = await service.credits_view(session, access.account.id)
    return CreditsRead(
        account_id=access.account.id, balance=balance,
        grants=[CreditGrantRead.model_validate(g) for g in live],
        upcoming=[CreditGrantRead.model_validate(g) for g in upcoming],
    )


@router.get(
    "/accounts/{account_id}/credits/entries", response_model=CreditEntryPage, responses=responses(400, 401, 403, 404)
)
async def list_credit_entries(access: CreditsReader, session: SessionDep, page: Paging) -> CreditEntryPage:
    """The ledger, newest first: every grant, debit, expiry, refund and rollover with the balance after it."""
    rows = await CreditsRepository(session).entries(access.account.id, before=page.after_uuid(), limit=page.limit + 1)
    items, cursor = split_page(rows, page, "id")
    return CreditEntryPage(items=[CreditEntryRead.model_validate(e) for e in items], next_cursor=cursor)


@router.post(
    "/admin/accounts/{account_id}/credits/grants",
    status_code=status.HTTP_201_CREATED,
    response_model=CreditChangeRead,
    tags=["admin"],
    responses={**responses(400, 401, 403, 404, 422), **conflicts({})},
)
async def grant_credits(
    account_id: uuid.UUID, body: CreditGrantCreate, admin: PlatformAdmin, session: SessionDep,
    idempotency: IdempotencyDep,
) -> Response:
    """Grants credits now (400 `expiry_in_past` for an `expires_at` already past). Honours `Idempotency-Key`,
    which is also kept in the ledger: the same key for this account answers the first grant."""
    async def run() -> CreditChangeRead:
        return change_read(await service.grant(
            session, account_id=account_id, amount=body.amount, reason=body.reason, priority=body.priority,
            expires_at=body.expires_at, reference=body.reference, idempotency_key=idempotency.key,
        ))

    return await idempotency.run(
        session, principal_id=admin.user.id, body=body, status_code=status.HTTP_201_CREATED, action=run
    )


@router.post(
    "/admin/accounts/{account_id}/credits/debits",
    status_code=status.HTTP_201_CREATED,
    response_model=CreditChangeRead,
    tags=["admin"],
    responses={**responses(401, 403, 404, 422),
               **conflicts({"insufficient_credits": "the balance is below the amount (`details.balance`)"})},
)
async def debit_credits(
    account_id: uuid.UUID, body: CreditDebitCreate, admin: PlatformAdmin, session: SessionDep,
    idempotency: IdempotencyDep,
) -> Response:
    """Takes credits (prepaid usage), burning grants by priority, then soonest expiry, then oldest. More than the
    balance is 409 `insufficient_credits` and changes nothing. Honours `Idempotency-Key`, kept in the ledger."""
    async def run() -> CreditChangeRead:
        return change_read(await service.debit(
            session, account_id=account_id, amount=body.amount, reason=body.reason, reference=body.reference,
            idempotency_key=idempotency.key,
        ))

    return await idempotency.run(
        session, principal_id=admin.user.id, body=body, status_code=status.HTTP_201_CREATED, action=run
    )


@router.post(
    "/admin/accounts/{account_id}/credits/refunds",
    status_code=status.HTTP_201_CREATED,
    response_model=CreditChangeRead,
    tags=["admin"],
    responses={**responses(401, 403, 404, 422), **conflicts({
        "not_a_debit": "only a debit can be refunded",
        "refund_exceeds_debit": "more than what is left of the debit to refund (`details.refundable`)",
    })},
)
async def refund_credits(
    account_id: uuid.UUID, body: CreditRefundCreate, admin: PlatformAdmin, session: SessionDep,
    idempotency: IdempotencyDep,
) -> Response:
    """Gives back (part of) a debit as a new grant (no expiry) and a new `refund` entry naming it; the debit
    itself never changes. 404 `entry_not_found` for an entry of another account. Honours `Idempotency-Key`."""
    async def run() -> CreditChangeRead:
        return change_read(await service.refund(
            session, account_id=account_id, entry_id=body.entry_id, amount=body.amount, reason=body.reason,
            idempotency_key=idempotency.key,
        ))

    return await idempotency.run(
        session, principal_id=admin.user.id, body=body, status_code=status.HTTP_201_CREATED, action=run
    )
