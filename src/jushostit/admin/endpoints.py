from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from jushostit import container
from jushostit.admin import service
from jushostit.admin.repository import AdminRepository
from jushostit.admin.schemas import (
    AdminAccountPage,
    AdminAccountRead,
    AdminUserRead,
    BillingModeUpdate,
    ContractUpdate,
    DunningPolicyRead,
    DunningPolicyUpdate,
    ReconcileRequested,
    SuspendRequest,
    UnsuspendRequest,
    UserSuspendRequest,
)
from jushostit.auth.dependencies import require_admin
from jushostit.billing.facts import effective_dunning, entitlement_inputs, instance_facts
from jushostit.billing.repository import BillingRepository
from jushostit.catalog import service as catalog
from jushostit.catalog.endpoints import template_admin_read
from jushostit.catalog.schemas import TemplateAdminRead, TemplateCreateBody
from jushostit.catalog.spec import TemplateSpec
from jushostit.kit.db import SessionDep, utcnow
from jushostit.kit.errors import NotFound, conflicts, responses
from jushostit.kit.pagination import Paging, split_page
from jushostit.models import Account, User
from jushostit.reconcile.manifests import refuse_undeployable
from jushostit.reconcile.repository import ReconcileRepository

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin())])


async def _account(session: SessionDep, account_id: uuid.UUID) -> Account:
    account = await BillingRepository(session).lock_account(account_id)
    if account is None:
        raise NotFound("Account not found")
    return account


async def _user(session: SessionDep, user_id: uuid.UUID) -> User:
    user = await AdminRepository(session).user_for_update(user_id)
    if user is None:
        raise NotFound("User not found")
    return user


async def _read(session: SessionDep, accounts: list[Account]) -> list[AdminAccountRead]:
    ids = [a.id for a in accounts]
    reconcile = ReconcileRepository(session)
    now, settings = utcnow(), container.current().settings
    facts = await reconcile.accounts_with_subscriptions(ids, now)
    instances = await reconcile.live_instances(ids)
    health = await AdminRepository(session).instance_health(ids)
    items = []
    for account in accounts:
        row, subscriptions = facts[account.id]
        entitled = entitlement_inputs(
            account,
            subscriptions,
            invoice_due_at=row.invoice_due_at,
            month_spend_minor=row.month_spend_minor,
            now=now,
            expired_retention_days=settings.expired_retention_days,
        ).decide(now, instance_facts(i for i in instances if i.account_id == account.id))
        count, failing, error, reconciled = health.get(account.id, (0, 0, None, None))
        items.append(
            AdminAccountRead(
                id=account.id, name=account.name, status=entitled.account_status,
                suspension_reasons=account.suspension_reasons, holds=sorted(entitled.holds),
                billing_mode=account.billing_mode, contract_ref=account.contract_ref,
                contract_ends_at=account.contract_ends_at,
                level=entitled.level.name, reasons=list(entitled.reasons), access=entitled.access.value,
                instances=count, failing_instances=failing, last_error=error, last_reconciled_at=reconciled,
                reconcile_error=account.reconcile_error, reconcile_error_at=account.reconcile_error_at,
                reconcile_failures=account.reconcile_failures, created_at=account.created_at,
            )
        )
    return items


@router.get("/accounts", response_model=AdminAccountPage, responses=responses(400, 401, 403))
async def list_accounts(
    session: SessionDep,
    page: Paging,
    failing: Annotated[bool, Query(description="Only accounts whose last reconcile failed or with a failing instance")] = False,
) -> AdminAccountPage:
    rows = await AdminRepository(session).accounts(after=page.after_uuid(), limit=page.limit + 1, failing_only=failing)
    items, cursor = split_page(rows, page, "id")
    return AdminAccountPage(items=await _read(session, items), next_cursor=cursor)


@router.post("/accounts/{account_id}/suspend", response_model=AdminAccountRead, responses=responses(401, 403, 404, 422))
async def suspend_account(account_id: uuid.UUID, body: SuspendRequest, session: SessionDep) -> AdminAccountRead:
    account = await service.suspend(session, account=await _account(session, account_id), reason=body.reason,
                                    note=body.note)
    return (await _read(session, [account]))[0]


@router.post(
    "/accounts/{account_id}/unsuspend", response_model=AdminAccountRead, responses=responses(401, 403, 404, 409, 422)
)
async def unsuspend_account(account_id: uuid.UUID, body: UnsuspendRequest, session: SessionDep) -> AdminAccountRead:
    account = await service.unsuspend(session, account=await _account(session, account_id), reason=body.reason)
    return (await _read(session, [account]))[0]


@router.post("/accounts/{account_id}/reconcile", response_model=ReconcileRequested, status_code=202,
             responses=responses(401, 403, 404))
async def reconcile_account(account_id: uuid.UUID, session: SessionDep) -> ReconcileRequested:
    await service.force_reconcile(session, account=await _account(session, account_id))
    return ReconcileRequested(account_id=account_id, queued=True)


@router.post(
    "/accounts/{account_id}/billing-mode", response_model=AdminAccountRead,
    responses=responses(401, 403, 404, 409, 422),
)
async def set_billing_mode(account_id: uuid.UUID, body: BillingModeUpdate, session: SessionDep) -> AdminAccountRead:
    """409 `card_payments_not_configured`: `card` while Stripe is not configured."""
    account = await service.set_billing_mode(
        session, account=await _account(session, account_id), billing_mode=body.billing_mode,
        card_payments=container.current().settings.stripe_configured,
    )
    return (await _read(session, [account]))[0]


@router.put(
    "/accounts/{account_id}/contract", response_model=AdminAccountRead,
    responses={**responses(401, 403, 404, 422), **conflicts({"no_contract": "the account has no prepaid contract"})},
)
async def set_contract_end(account_id: uuid.UUID, body: ContractUpdate, session: SessionDep) -> AdminAccountRead:
    """Set the end of the account's prepaid contract: later when its deal is renewed, an instant already past to
    end it now. Applied at once: the `contract` hold holds from the end on and lifts when the end moves past now;
    the subscriptions the contract pays that lapsed or end within a day are renewed at once, and the account is
    reconciled. Audited (`admin.contract_end_changed`)."""
    account = await service.set_contract_end(session, account=await _account(session, account_id),
                                             ends_at=body.ends_at)
    return (await _read(session, [account]))[0]


def _dunning_read(account: Account) -> DunningPolicyRead:
    values, sources = effective_dunning(account.billing_mode, account.dunning_policy)
    return DunningPolicyRead(
        account_id=account.id, billing_mode=account.billing_mode, grace=values.grace,
        reminders=list(values.reminders), terminate_after=values.terminate_after, sources=sources,
    )


@router.get("/accounts/{account_id}/dunning-policy", response_model=DunningPolicyRead,
            responses=responses(401, 403, 404))
async def get_dunning_policy(account_id: uuid.UUID, session: SessionDep) -> DunningPolicyRead:
    """The account's effective dunning policy (ISO 8601 durations) and where each value comes from."""
    return _dunning_read(await _account(session, account_id))


@router.put("/accounts/{account_id}/dunning-policy", response_model=DunningPolicyRead,
            responses=responses(400, 401, 403, 404, 422))
async def put_dunning_policy(
    account_id: uuid.UUID, body: DunningPolicyUpdate, session: SessionDep
) -> DunningPolicyRead:
    """Replace the account's overrides of its billing mode's policy: `grace` (past due this long → suspended for
    `billing`, applied at that instant), `reminders`, `terminate_after` (`null`: never). A field left out
    follows the default again; `{}` removes every override. 400 `invalid_dunning_policy`: a reminder at or
    after the grace. Audited."""
    account = await service.set_dunning_policy(
        session, account=await _account(session, account_id), overrides=body.model_dump(exclude_unset=True),
    )
    return _dunning_read(account)


@router.post("/users/{user_id}/suspend", response_model=AdminUserRead, responses=responses(401, 403, 404, 409, 422))
async def suspend_user(user_id: uuid.UUID, body: UserSuspendRequest, session: SessionDep) -> AdminUserRead:
    """Refuse the user every sign-in and every request (401 `user_suspended`); their open event streams end."""
    user = await service.suspend_user(session, user=await _user(session, user_id), note=body.note)
    return AdminUserRead.model_validate(user)


@router.post("/users/{user_id}/unsuspend", response_model=AdminUserRead, responses=responses(401, 403, 404, 409))
async def unsuspend_user(user_id: uuid.UUID, session: SessionDep) -> AdminUserRead:
    """Lift the suspension: the user's sessions and API keys work again."""
    user = await service.unsuspend_user(session, user=await _user(session, user_id))
    return AdminUserRead.model_validate(user)


# Here rather than beside the template listing in catalog: the check renders the template's manifests, which
# the runtime (above the catalog) does.
@router.post(
    "/templates", status_code=status.HTTP_201_CREATED, response_model=TemplateAdminRead, tags=["catalog"],
    responses=responses(401, 403, 409, 422),
)
async def admin_create_template(body: TemplateCreateBody, session: SessionDep) -> TemplateAdminRead:
    """A template validated like the shipped ones; a 422 names the field that is wrong. Its Kubernetes
    manifests, at every tier, running, throttled and stopped, must pass the API's schemas and Pod Security
    (restricted, or baseline when the template says why): otherwise 422 `template_not_deployable`, whose
    `details` name the object and field at fault."""
    if isinstance(body, TemplateSpec):  # a seat template has no manifests
        await asyncio.to_thread(refuse_undeployable, body)  # CPU-bound (tens of milliseconds): off the event loop
    return template_admin_read(await catalog.create_template(session, data=body))
