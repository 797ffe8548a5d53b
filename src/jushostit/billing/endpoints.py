from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.responses import Response

from jushostit.auth.dependencies import AccountAccess, require_account, require_admin
from jushostit.auth.scopes import Scope
from jushostit.billing import service
from jushostit.billing.provider import PaymentProvider, payment_provider
from jushostit.billing.repository import BillingRepository
from jushostit.billing.schemas import (
    CheckoutCreate,
    CheckoutRead,
    SubscriptionCancel,
    SubscriptionPage,
    SubscriptionRead,
)
from jushostit.kit.db import SessionDep
from jushostit.kit.errors import responses
from jushostit.kit.idempotency import IdempotencyDep
from jushostit.kit.pagination import PageParams, page_params, split_page
from jushostit.models import Plan, Role, Subscription

router = APIRouter(prefix="/v1", tags=["billing"])

# Members do not see or change billing: owners and admins of the account only.
BillingReader = Annotated[AccountAccess, Depends(require_account(Scope.billing_read, Role.admin))]
BillingWriter = Annotated[AccountAccess, Depends(require_account(Scope.billing_write, Role.admin))]
Provider = Annotated[PaymentProvider, Depends(payment_provider)]
Paging = Annotated[PageParams, Depends(page_params)]


def subscription_read(subscription: Subscription, plan: Plan) -> SubscriptionRead:
    return SubscriptionRead(
        id=subscription.id,
        account_id=subscription.account_id,
        plan=plan.code,
        provider=subscription.provider,
        status=subscription.status,
        current_period_start=subscription.current_period_start,
        current_period_end=subscription.current_period_end,
        cancel_at_period_end=subscription.cancel_at_period_end,
        cancelled_at=subscription.cancelled_at,
        created_at=subscription.created_at,
    )


@router.post(
    "/accounts/{account_id}/checkout",
    status_code=status.HTTP_201_CREATED,
    response_model=CheckoutRead,
    responses=responses(401, 403, 404, 409, 422),
)
async def checkout(
    body: CheckoutCreate,
    access: BillingWriter,
    session: SessionDep,
    provider: Provider,
    idempotency: IdempotencyDep,
) -> Response:
    """A free plan is active at once (30 days); a paid plan is pending until paid (`checkout_url` says where,
    when the provider has a payment page). Honours `Idempotency-Key`."""

    async def run() -> CheckoutRead:
        outcome = await service.checkout(
            session, account_id=access.account.id, plan_code=body.plan, provider=provider
        )
        return CheckoutRead(
            subscription=subscription_read(outcome.subscription, outcome.plan), checkout_url=outcome.checkout_url
        )

    return await idempotency.run(
        session, principal_id=access.principal.user.id, body=body, status_code=status.HTTP_201_CREATED, action=run
    )


@router.get(
    "/accounts/{account_id}/subscriptions", response_model=SubscriptionPage, responses=responses(400, 401, 403, 404)
)
async def list_subscriptions(access: BillingReader, session: SessionDep, page: Paging) -> SubscriptionPage:
    rows = await BillingRepository(session).subscriptions(
        access.account.id, after=page.after_uuid(), limit=page.limit + 1
    )
    subscriptions, cursor = split_page([s for s, _ in rows], page, "id")
    plans = {s.id: p for s, p in rows}
    return SubscriptionPage(items=[subscription_read(s, plans[s.id]) for s in subscriptions], next_cursor=cursor)


@router.post(
    "/accounts/{account_id}/subscriptions/{subscription_id}/renew",
    response_model=SubscriptionRead,
    responses=responses(401, 403, 404, 409, 422),
)
async def renew_subscription(
    subscription_id: uuid.UUID, access: BillingWriter, session: SessionDep, idempotency: IdempotencyDep
) -> Response:
    """Extends the period by one interval from max(period end, now) — exactly once per `Idempotency-Key`."""

    async def run() -> SubscriptionRead:
        return subscription_read(
            *await service.renew(session, account_id=access.account.id, subscription_id=subscription_id)
        )

    return await idempotency.run(
        session, principal_id=access.principal.user.id, body=None, status_code=status.HTTP_200_OK, action=run
    )


@router.post(
    "/accounts/{account_id}/subscriptions/{subscription_id}/cancel",
    response_model=SubscriptionRead,
    responses=responses(401, 403, 404, 409, 422),
)
async def cancel_subscription(
    subscription_id: uuid.UUID, body: SubscriptionCancel, access: BillingWriter, session: SessionDep
) -> SubscriptionRead:
    """`at: period_end` (default) keeps it to the end of the period without renewal; `at: now` ends it at once."""
    return subscription_read(
        *await service.cancel(session, account_id=access.account.id, subscription_id=subscription_id, at=body.at)
    )


@router.post(
    "/admin/subscriptions/{subscription_id}/mark-paid",
    response_model=SubscriptionRead,
    dependencies=[Depends(require_admin())],
    tags=["admin"],
    responses=responses(401, 403, 404, 409),
)
async def mark_subscription_paid(subscription_id: uuid.UUID, session: SessionDep) -> SubscriptionRead:
    """Confirms the off-platform payment of a pending subscription: active for one interval from now; the
    account's `billing` hold (only that one) is lifted."""
    return subscription_read(*await service.mark_paid(session, subscription_id=subscription_id))


@router.post(
    "/admin/subscriptions/{subscription_id}/renew",
    response_model=SubscriptionRead,
    dependencies=[Depends(require_admin())],
    tags=["admin"],
    responses=responses(401, 403, 404, 409),
)
async def renew_subscription_paid(subscription_id: uuid.UUID, session: SessionDep) -> SubscriptionRead:
    """Records the off-platform payment of an active subscription's next period: the period is extended once
    and the account's `billing` hold (only that one) is lifted."""
    return subscription_read(*await service.renew_paid(session, subscription_id=subscription_id))
