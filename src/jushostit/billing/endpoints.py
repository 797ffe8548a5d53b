from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated

import stripe
from fastapi import APIRouter, Body, Depends, Path, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit import container
from jushostit.auth.dependencies import (
    AccountAccess,
    PlatformAdmin,
    check_email_verified,
    require_account,
    require_admin,
)
from jushostit.auth.scopes import Scope
from jushostit.billing import service
from jushostit.billing.provider import PaymentProvider, PaymentProviders, payment_providers
from jushostit.billing.repository import BillingRepository
from jushostit.billing.schemas import (
    BillingPortalRead,
    CancelAt,
    CheckoutCreate,
    CheckoutRead,
    CreditPurchasePage,
    CreditPurchaseRead,
    PackPaymentRecord,
    PaymentRecord,
    PlanChangeCreate,
    PlanChangeRead,
    SubscriptionCancel,
    SubscriptionPage,
    SubscriptionRead,
    SubscriptionRenew,
)
from jushostit.idempotency import IdempotencyDep
from jushostit.kit.db import SessionDep
from jushostit.kit.errors import Conflict, ServiceUnavailable, conflicts, responses
from jushostit.kit.pagination import Paging, split_page
from jushostit.models import CreditPurchase, Plan, Role, Subscription

router = APIRouter(prefix="/v1", tags=["billing"])

# Members do not see or change billing: owners and admins of the account only.
BillingReader = Annotated[AccountAccess, Depends(require_account(Scope.billing_read, Role.admin))]
BillingWriter = Annotated[AccountAccess, Depends(require_account(Scope.billing_write, Role.admin))]
BillingOwner = Annotated[AccountAccess, Depends(require_account(Scope.billing_write, Role.owner))]
@contextlib.contextmanager
def provider_unavailable_as_503() -> Iterator[None]:
    """A call to the payment provider that fails is a 503 the client can retry: nothing was recorded here, and
    the provider's idempotency keys make the retry repeat nothing there."""
    try:
        yield
    except stripe.StripeError as error:
        raise ServiceUnavailable("The payment provider did not answer; try again in a moment",
                                 code="payment_provider_unavailable") from error


def _providers() -> PaymentProviders:
    return payment_providers(container.current().settings)


Providers = Annotated[PaymentProviders, Depends(_providers)]

# The 409 codes of a renewal, for the OpenAPI.
RENEWAL_CONFLICTS = {
    "subscription_cancelled": "the subscription is cancelled: check out again",
    "subscription_pending": "the subscription waits for its first payment (mark-paid)",
    "renewal_period_mismatch": "`period_start` is neither the next period nor a paid one (see `details`)",
    "subscription_changed": "the period changed while it was being renewed: reload and retry",
    "idempotency_key_reused": "the `Idempotency-Key` was used for another request",
    "idempotency_key_in_use": "a request with this `Idempotency-Key` is still running",
}
CUSTOMER_RENEWAL_CONFLICTS = {
    **RENEWAL_CONFLICTS,
    "payment_required": "a paid plan renews when its payment is recorded",
    "renewal_not_open": "a free plan renews only in its last days; `details.opens_at` says when",
}


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
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def checkout(
    body: CheckoutCreate,
    access: BillingWriter,
    session: SessionDep,
    providers: Providers,
    idempotency: IdempotencyDep,
) -> Response:
    """A free plan is active at once (30 days); a paid plan is pending until paid. A `card` account pays on
    Stripe Checkout: `checkout_url` is where; asking again while that page is open (a retry, a double click)
    answers the same subscription and the same page, and a page left unpaid for 24 hours lapses and never
    blocks a new checkout. Other billing modes pay off-platform (`checkout_url` null; an operator records the
    payment). Honours `Idempotency-Key`. Needs a verified e-mail address."""
    check_email_verified(access.principal)
    provider = providers.for_mode(access.account.billing_mode)
    base_url = container.current().settings.base_url
    if provider.hosted_checkout:
        # Idempotent by itself (keyed on the pending subscription), and it spans two transactions, which a
        # stored Idempotency-Key response could not: the key is accepted and adds nothing.
        return JSONResponse(
            jsonable_encoder(await _hosted_checkout(session, access, body.plan, provider, base_url)),
            status_code=status.HTTP_201_CREATED,
        )

    async def run() -> CheckoutRead:
        outcome = await service.checkout(
            session, account_id=access.account.id, plan_code=body.plan, provider=provider, base_url=base_url
        )
        return CheckoutRead(
            subscription=subscription_read(outcome.subscription, outcome.plan), checkout_url=outcome.checkout_url
        )

    return await idempotency.run(
        session, principal_id=access.principal.user.id, body=body, status_code=status.HTTP_201_CREATED, action=run
    )


async def _hosted_checkout(
    session: AsyncSession, access: AccountAccess, plan_code: str, provider: PaymentProvider, base_url: str
) -> CheckoutRead:
    """The pending subscription is committed first; the provider is called outside any transaction (its
    idempotency keys make a repeat harmless); what it answered is recorded in a second transaction."""
    outcome = await service.checkout(
        session, account_id=access.account.id, plan_code=plan_code, provider=provider, base_url=base_url
    )
    subscription, plan = outcome.subscription, outcome.plan
    if outcome.opens_at_provider is not None:
        await session.commit()
        with provider_unavailable_as_503():
            started = await provider.start_checkout(outcome.opens_at_provider)
        subscription, plan = await service.record_checkout(
            session, subscription_id=subscription.id, started=started
        )
    return CheckoutRead(subscription=subscription_read(subscription, plan), checkout_url=subscription.checkout_url)


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
    responses={**responses(401, 403, 404, 422), **conflicts(CUSTOMER_RENEWAL_CONFLICTS)},
)
async def renew_subscription(
    subscription_id: uuid.UUID,
    access: BillingWriter,
    session: SessionDep,
    idempotency: IdempotencyDep,
    providers: Providers,
    body: Annotated[SubscriptionRenew, Body(default_factory=SubscriptionRenew)],
) -> Response:
    """Pays for the next period of a free plan: it follows on from the period end (from now once lapsed).
    Open in the last `JUSHOSTIT_FREE_RENEWAL_WINDOW_DAYS` days of the period, never more than one period
    ahead. Each period is renewed once: naming a paid `period_start` again, or repeating an `Idempotency-Key`,
    answers the subscription without extending it. Paid plans renew when their payment is recorded."""
    window = timedelta(days=container.current().settings.free_renewal_window_days)

    async def run() -> SubscriptionRead:
        return subscription_read(
            *await service.renew(
                session, account_id=access.account.id, subscription_id=subscription_id,
                period_start=body.period_start, renewed_by=access.principal.user.id,
                free_renewal_window=window, providers=providers,
            )
        )

    return await idempotency.run(
        session, principal_id=access.principal.user.id, body=body, status_code=status.HTTP_200_OK, action=run
    )


@router.post(
    "/accounts/{account_id}/subscriptions/{subscription_id}/cancel",
    response_model=SubscriptionRead,
    responses=responses(401, 403, 404, 409, 422, 503),
)
async def cancel_subscription(
    subscription_id: uuid.UUID, body: SubscriptionCancel, access: BillingWriter, session: SessionDep,
    providers: Providers,
) -> SubscriptionRead:
    """`at: period_end` (default) keeps it to the end of the period without renewal; `at: now` ends it at once.
    A Stripe subscription is cancelled at Stripe (idempotently) and Stripe's answer is applied; 503
    `payment_provider_unavailable` when Stripe cannot be reached (nothing changed)."""
    managed = await service.provider_managed(
        session, account_id=access.account.id, subscription_id=subscription_id, providers=providers
    )
    if managed is None:
        return subscription_read(
            *await service.cancel(session, account_id=access.account.id, subscription_id=subscription_id, at=body.at)
        )
    records, external_id = managed
    await session.commit()  # nothing is held open while the provider answers
    with provider_unavailable_as_503():
        snapshot = await records.cancel(external_id, at_period_end=body.at == CancelAt.period_end)
    return subscription_read(*await service.record_cancellation_request(
        session, account_id=access.account.id, subscription_id=subscription_id, at=body.at, snapshot=snapshot,
    ))


@router.post(
    "/accounts/{account_id}/subscriptions/{subscription_id}/change-plan",
    response_model=PlanChangeRead,
    responses={**responses(401, 403, 404, 422, 503), **conflicts({
        "subscription_cancelled": "the subscription is cancelled: check out again",
        "subscription_pending": "the subscription waits for its first payment",
        "plan_retired": "the plan is retired",
        "plan_unchanged": "the subscription is on that plan already",
        "billing_mode_not_allowed": "the plan is not sold to accounts of this billing mode",
        "plan_change_not_supported": "only a paid plan of the same currency and interval can replace a paid plan",
    })},
)
async def change_plan(
    subscription_id: uuid.UUID, body: PlanChangeCreate, access: BillingWriter, session: SessionDep,
    providers: Providers,
) -> PlanChangeRead:
    """Upgrade or downgrade to another paid plan, prorated for the rest of the period. A card subscription
    changes at Stripe, which invoices the difference at once; the new plan (its quotas) applies when that is
    paid (`pending_payment` until then), and a retry repeats nothing. Off-platform subscriptions change at once,
    and the answer carries the prorated difference for the operator to bill or credit."""
    subscription, plan = await service.plan_change_target(
        session, account=access.account, subscription_id=subscription_id, plan_code=body.plan)
    records = providers.records(subscription.provider)
    if records is None or subscription.external_id is None:
        changed, sold, proration = await service.change_plan_off_platform(
            session, account_id=access.account.id, subscription_id=subscription_id, plan_code=body.plan)
        return PlanChangeRead(subscription=subscription_read(changed, sold), proration_minor=proration,
                              pending_payment=False)
    external_id, change_key = subscription.external_id, service.provider_change_key(subscription, plan)
    await session.commit()  # nothing is held open while Stripe answers
    with provider_unavailable_as_503():
        snapshot = await records.change_plan(external_id, plan, change_key=change_key)
    changed, sold = await service.record_plan_change_request(
        session, account_id=access.account.id, subscription_id=subscription_id, plan=plan, snapshot=snapshot)
    return PlanChangeRead(subscription=subscription_read(changed, sold), proration_minor=None,
                          pending_payment=snapshot.pending_update)


@router.post(
    "/accounts/{account_id}/billing-portal",
    response_model=BillingPortalRead,
    responses={**responses(401, 403, 404, 503), **conflicts({
        "no_payment_customer": "the account has never paid by card (check out first)",
        "card_payments_not_configured": "Stripe is not configured here",
    })},
)
async def billing_portal(access: BillingOwner, session: SessionDep, providers: Providers) -> BillingPortalRead:
    """A Stripe customer portal session (owners only): where the customer updates their card and reads their
    invoices. The URL is short-lived: open it at once."""
    if providers.stripe is None:
        raise Conflict("Card payments are not configured here", code="card_payments_not_configured")
    customer_id = service.portal_customer(access.account)
    with provider_unavailable_as_503():
        url = await providers.stripe.portal_url(customer_id, f"{container.current().settings.base_url}/billing/portal")
    return BillingPortalRead(url=url)


def purchase_read(purchase: CreditPurchase) -> CreditPurchaseRead:
    return CreditPurchaseRead(
        id=purchase.id, account_id=purchase.account_id, pack=purchase.pack_code, credits=purchase.credits,
        price_minor=purchase.price_minor, currency=purchase.currency, provider=purchase.provider,
        status=purchase.status, checkout_url=purchase.checkout_url if purchase.status == "pending" else None,
        payment_reference=purchase.payment_reference, paid_at=purchase.paid_at, created_at=purchase.created_at,
    )


@router.post(
    "/accounts/{account_id}/credit-packs/{pack_code}/purchase",
    status_code=status.HTTP_201_CREATED,
    response_model=CreditPurchaseRead,
    responses={**responses(401, 403, 404, 422, 503), **conflicts({
        "billing_mode_not_allowed": "the pack is not sold to accounts of this billing mode",
        "account_terminated": "the account is terminated",
    })},
)
async def purchase_credit_pack(
    pack_code: Annotated[str, Path(max_length=63)], access: BillingWriter, session: SessionDep, providers: Providers,
) -> CreditPurchaseRead:
    """Buy a credit pack (`GET /v1/credit-packs`). The purchase is pending; its credits are granted once the
    payment is confirmed, never before: a card account pays on Stripe Checkout (`checkout_url`, a one-off
    payment) and Stripe's confirmation grants them; other billing modes pay off-platform and an operator
    records the payment. Each call is a new purchase (an unpaid checkout lapses after 24 hours). Needs a
    verified e-mail address."""
    check_email_verified(access.principal)
    provider = providers.for_mode(access.account.billing_mode)
    purchase, opens_at_provider = await service.buy_credit_pack(
        session, account_id=access.account.id, pack_code=pack_code, provider=provider,
        base_url=container.current().settings.base_url)
    if opens_at_provider is None:
        return purchase_read(purchase)
    await session.commit()  # the pending purchase is kept first; Stripe is called outside any transaction
    with provider_unavailable_as_503():
        started = await provider.start_pack_checkout(opens_at_provider)
    return purchase_read(await service.record_pack_checkout(session, purchase_id=purchase.id, started=started))


@router.get(
    "/accounts/{account_id}/credit-purchases",
    response_model=CreditPurchasePage,
    responses=responses(400, 401, 403, 404),
)
async def list_credit_purchases(access: BillingReader, session: SessionDep, page: Paging) -> CreditPurchasePage:
    rows = await BillingRepository(session).purchases(access.account.id, after=page.after_uuid(),
                                                      limit=page.limit + 1)
    purchases, cursor = split_page(rows, page, "id")
    return CreditPurchasePage(items=[purchase_read(p) for p in purchases], next_cursor=cursor)


@router.post(
    "/admin/credit-purchases/{purchase_id}/mark-paid",
    response_model=CreditPurchaseRead,
    tags=["admin"],
    responses={**responses(401, 403, 404, 422), **conflicts({
        "paid_by_provider": "a card purchase is confirmed by the payment provider",
        "credit_purchase_expired": "the purchase has expired",
    })},
)
async def mark_credit_purchase_paid(
    purchase_id: uuid.UUID, body: PackPaymentRecord, admin: PlatformAdmin, session: SessionDep, providers: Providers,
) -> CreditPurchaseRead:
    """Confirms the off-platform payment of a pending credit pack: its credits are granted once; a repeat
    answers the same purchase."""
    return purchase_read(await service.mark_pack_paid(session, purchase_id=purchase_id,
                                                      reference=body.payment_reference, providers=providers))


@router.post(
    "/admin/subscriptions/{subscription_id}/mark-paid",
    response_model=SubscriptionRead,
    dependencies=[Depends(require_admin())],
    tags=["admin"],
    responses=responses(401, 403, 404, 409),
)
async def mark_subscription_paid(
    subscription_id: uuid.UUID, admin: PlatformAdmin, session: SessionDep
) -> SubscriptionRead:
    """Confirms the off-platform payment of a pending subscription: active for one interval from now; the
    account's `billing` hold (only that one) is lifted."""
    return subscription_read(
        *await service.mark_paid(session, subscription_id=subscription_id, recorded_by=admin.user.id)
    )


@router.post(
    "/admin/subscriptions/{subscription_id}/renew",
    response_model=SubscriptionRead,
    tags=["admin"],
    responses={**responses(401, 403, 404, 422), **conflicts(RENEWAL_CONFLICTS)},
)
async def renew_subscription_paid(
    subscription_id: uuid.UUID,
    body: PaymentRecord,
    admin: PlatformAdmin,
    session: SessionDep,
    idempotency: IdempotencyDep,
) -> Response:
    """Records the off-platform payment of the period starting at `period_start` (the subscription's
    `current_period_end`): the period is extended once and the account's `billing` hold (only that one) is
    lifted. Recording a period that is paid already — a retried click, a second operator — answers the
    subscription without extending it. Honours `Idempotency-Key`."""

    async def run() -> SubscriptionRead:
        return subscription_read(
            *await service.record_payment(
                session, subscription_id=subscription_id, period_start=body.period_start,
                amount_minor=body.amount_minor, external_reference=body.external_reference,
                recorded_by=admin.user.id,
            )
        )

    return await idempotency.run(
        session, principal_id=admin.user.id, body=body, status_code=status.HTTP_200_OK, action=run
    )
