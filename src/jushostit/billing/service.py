"""Checkout, renewal, cancellation and payment confirmation. These record billing facts only (DESIGN §2):
each asks for a reconcile of the account, deferred after the commit. Never commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit
from jushostit.billing import periods
from jushostit.billing.provider import (
    CheckoutRequest,
    CheckoutResult,
    PackCheckoutRequest,
    PaymentProvider,
    PaymentProviders,
    ProviderCheckout,
    ProviderInvoice,
    ProviderRecords,
    ProviderSubscription,
    plan_of_lookup_key,
)
from jushostit.billing.repository import BillingRepository
from jushostit.billing.schemas import CancelAt
from jushostit.catalog.loader import load_credit_packs
from jushostit.catalog.repository import CatalogRepository
from jushostit.config import Settings
from jushostit.credits import service as credits
from jushostit.entitlement import DunningStage
from jushostit.kit import context
from jushostit.kit.db import utcnow
from jushostit.kit.errors import Conflict, NotFound
from jushostit.models import (
    Account,
    AccountStatus,
    BillingMode,
    CreditPurchase,
    Payment,
    Plan,
    Subscription,
    SuspensionReason,
)
from jushostit.models.rows import DunningRecipient
from jushostit.notifications.service import queue_email
from jushostit.triggers import request_reconcile

# A hosted checkout page (Stripe Checkout) takes the payment for 24 hours; unpaid after that, it lapses.
HOSTED_CHECKOUT_LIFETIME = timedelta(hours=24)
# The `provider` of a subscription that a prepaid contract pays: active at checkout, renewed each period while
# the contract runs (CONTRACT_RENEWAL_LEAD before its period ends).
CONTRACT_PROVIDER = "contract"
CONTRACT_RENEWAL_LEAD = timedelta(days=1)


@dataclass(frozen=True)
class CheckoutOutcome:
    subscription: Subscription
    plan: Plan
    checkout_url: str | None
    # A hosted checkout still to be opened at the provider (after this transaction commits): what it needs.
    opens_at_provider: CheckoutRequest | None = None


def is_free(terms: Plan | Subscription) -> bool:
    """A plan, or the terms a subscription was sold with, that costs nothing."""
    return terms.price_minor == 0


def sold_terms(plan: Plan) -> dict[str, Any]:
    """What a new subscription keeps of its plan: this version's terms, whatever later edits change."""
    return {
        "plan_version": plan.version, "price_minor": plan.price_minor, "currency": plan.currency,
        "interval": plan.interval, "quotas": dict(plan.quotas), "stripe_price_id": plan.stripe_price_id,
    }


def _period_fields(subscription: Subscription) -> dict[str, Any]:
    return {
        "status": subscription.status,
        "current_period_start": subscription.current_period_start.isoformat(),
        "current_period_end": subscription.current_period_end.isoformat(),
        "cancel_at_period_end": subscription.cancel_at_period_end,
        "cancelled_at": subscription.cancelled_at.isoformat() if subscription.cancelled_at else None,
    }


def _account_fields(account: Account) -> dict[str, Any]:
    return {
        "status": account.status.value,
        "suspension_reasons": list(account.suspension_reasons),
        "past_due_since": account.past_due_since.isoformat() if account.past_due_since else None,
        "budget_minor": account.budget_minor,
    }


async def payment_received(session: AsyncSession, account: Account) -> None:
    """A payment of no subscription (an invoice's): like every payment, it lifts the account's `billing` hold and
    past-due clock, and nothing else. The caller holds the account's lock."""
    await _account_entitled_by(session, account, None, payment=True)


async def _account_entitled_by(
    session: AsyncSession, account: Account, plan: Plan | None, *, payment: bool
) -> None:
    """The account's facts once a subscription to `plan` is active (or a payment of no subscription arrived, with
    no plan). A payment lifts only the `billing` hold and the past-due clock; every other hold stays (REFERENCE §1
    F4, F14). The plan's default budget applies when the account has none."""
    before = _account_fields(account)
    if payment:
        account.suspension_reasons = [r for r in account.suspension_reasons if r != SuspensionReason.billing]
        account.past_due_since = None
    if account.suspension_reasons:
        account.status = AccountStatus.suspended
    elif account.past_due_since is not None:
        account.status = AccountStatus.past_due
    else:
        account.status = AccountStatus.active
    if plan is not None and account.budget_minor is None and plan.default_budget_minor is not None:
        account.budget_minor = plan.default_budget_minor
    after = _account_fields(account)
    if before != after:
        changed = [name for name in after if before[name] != after[name]]
        await session.flush()
        await audit.record(
            session, action="account.billing_status_changed", target_type="account", target_id=account.id,
            account_id=account.id, before={n: before[n] for n in changed}, after={n: after[n] for n in changed},
        )


async def _locked_account(repository: BillingRepository, account_id: uuid.UUID) -> Account:
    account = await repository.lock_account(account_id)
    if account is None:
        raise NotFound("Account not found")
    return account


async def checkout(
    session: AsyncSession, *, account_id: uuid.UUID, plan_code: str, provider: PaymentProvider, base_url: str
) -> CheckoutOutcome:
    """A free plan is active at once for 30 days; a paid plan stays pending until the payment is confirmed,
    unless the account's prepaid contract runs: the contract pays, so it is active at once too. A provider with
    a hosted checkout is called after this transaction commits (`opens_at_provider`), never inside it; asking
    again for the same plan while that checkout is open answers the same one."""
    repository = BillingRepository(session)
    account = await _locked_account(repository, account_id)  # one checkout of an account at a time
    plan = await CatalogRepository(session).plan_by_code(plan_code)
    if plan is None:
        raise NotFound(f"No plan {plan_code!r}", code="plan_not_found")
    if plan.retired_at is not None:
        raise Conflict(f"The plan {plan_code!r} is retired and cannot be checked out", code="plan_retired")
    if account.billing_mode.value not in plan.billing_modes:
        raise Conflict(
            f"The plan {plan_code!r} is not available to accounts billed by {account.billing_mode.value}",
            code="billing_mode_not_allowed",
            details={"billing_mode": account.billing_mode.value, "allowed": list(plan.billing_modes)},
        )
    if account.status == AccountStatus.terminated:
        raise Conflict("The account is terminated", code="account_terminated")
    now = utcnow()
    paid_by_contract = account.billing_mode == BillingMode.prepaid and account.contract_ref is not None
    if paid_by_contract and not (account.contract_ends_at and account.contract_ends_at > now):
        raise Conflict("The account's prepaid contract has ended; an operator extends it", code="contract_ended",
                       details={"contract_ends_at": account.contract_ends_at.isoformat() if account.contract_ends_at
                                else None})
    existing = await repository.open_subscription_to(account.id, plan.id, now)
    if existing is not None and existing.checkout_expires_at is not None and existing.checkout_expires_at <= now:
        await _end_abandoned_checkout(session, repository, existing, now)  # it never blocks a new one
        existing = None
    if existing is not None:
        if existing.status == "pending" and provider.hosted_checkout and existing.provider == provider.name:
            # A retried or double-clicked checkout: the same subscription, and the same checkout at the provider.
            return CheckoutOutcome(
                existing, plan, existing.checkout_url,
                None if existing.checkout_url else checkout_request(account, plan, existing, base_url),
            )
        raise Conflict(
            f"The account already has a {existing.status} subscription to {plan_code!r}; renew it instead",
            code="already_subscribed",
            details={"subscription_id": str(existing.id)},
        )

    checkout_url = None
    if is_free(plan) or paid_by_contract:
        subscription = Subscription(
            account_id=account.id, plan_id=plan.id, provider=CONTRACT_PROVIDER if paid_by_contract else "manual",
            status="active", **sold_terms(plan), current_period_start=now,
            current_period_end=periods.period_end(now, interval=plan.interval, free=is_free(plan)),
        )
    else:
        # No period until the payment is confirmed: an empty one, which entitles nothing.
        subscription = Subscription(
            account_id=account.id, plan_id=plan.id, provider=provider.name, status="pending", **sold_terms(plan),
            current_period_start=now, current_period_end=now,
            checkout_expires_at=now + HOSTED_CHECKOUT_LIFETIME if provider.hosted_checkout else None,
        )
    await repository.add(subscription)
    await _default_budget(session, account, plan)
    if subscription.status == "active":  # its first period is paid at once (free, or by the contract): credits
        await credits.grant_period_credits(
            session, account_id=account.id, subscription_id=subscription.id, plan=plan,
            period_start=subscription.current_period_start, period_end=subscription.current_period_end,
        )
    await audit.record(
        session, action="subscription.created", target_type="subscription", target_id=subscription.id,
        account_id=account.id,
        after={"plan": plan.code, "provider": subscription.provider, **_period_fields(subscription)},
    )
    if subscription.status == "active":
        await _account_entitled_by(session, account, plan, payment=False)
    request_reconcile(account.id)
    if subscription.status == "pending" and provider.hosted_checkout:
        return CheckoutOutcome(subscription, plan, None, checkout_request(account, plan, subscription, base_url))
    if subscription.status == "pending":
        started = await provider.start_checkout(checkout_request(account, plan, subscription, base_url))
        checkout_url = started.checkout_url
    return CheckoutOutcome(subscription, plan, checkout_url)


async def _default_budget(session: AsyncSession, account: Account, plan: Plan) -> None:
    """An account without a budget takes the plan's default monthly budget on usage charges when it checks the
    plan out (owners change or remove it afterwards)."""
    if account.budget_minor is None and plan.default_budget_minor is not None:
        account.budget_minor, account.budget_currency = plan.default_budget_minor, plan.currency
        await audit.record(session, action="account.budget_set", target_type="account", target_id=account.id,
                           account_id=account.id, before={"budget_minor": None, "budget_currency": None},
                           after={"budget_minor": account.budget_minor, "budget_currency": account.budget_currency,
                                  "from_plan": plan.code})


def checkout_request(account: Account, plan: Plan, subscription: Subscription, base_url: str) -> CheckoutRequest:
    back = f"{base_url}/billing/checkout?subscription={subscription.id}"
    return CheckoutRequest(
        account_id=account.id, account_name=account.name, billing_email=account.billing_email,
        customer_id=account.provider_customer_id, subscription_id=subscription.id, plan=plan,
        price_minor=subscription.price_minor, currency=subscription.currency, interval=subscription.interval,
        stripe_price_id=subscription.stripe_price_id, plan_version=subscription.plan_version,
        success_url=f"{back}&result=paid", cancel_url=f"{back}&result=cancelled",
    )


async def _end_abandoned_checkout(
    session: AsyncSession, repository: BillingRepository, subscription: Subscription, now: datetime
) -> None:
    """A pending subscription whose hosted checkout lapsed unpaid: cancelled, so it never blocks a new one."""
    before = _period_fields(subscription)
    cancelled = await repository.cancel_pending(subscription.id, now=now)
    if cancelled is None:
        return  # paid or cancelled meanwhile
    await audit.record(
        session, action="subscription.checkout_expired", target_type="subscription", target_id=cancelled.id,
        account_id=cancelled.account_id, before=before, after=_period_fields(cancelled),
    )


async def record_checkout(
    session: AsyncSession, *, subscription_id: uuid.UUID, started: CheckoutResult
) -> tuple[Subscription, Plan]:
    """Keep what the provider answered for a pending subscription's hosted checkout: its session and URL, and
    the provider's customer of the account (created once: a later checkout reuses it)."""
    repository = BillingRepository(session)
    subscription, plan = await _subscription_by_id(repository, subscription_id)
    await _remember_customer(session, await _locked_account(repository, subscription.account_id), started)
    recorded = await repository.record_checkout(
        subscription.id, session_id=started.external_id, url=started.checkout_url, expires_at=started.expires_at,
        price_id=started.price_id,
    )
    if recorded is None:
        return await _subscription_by_id(repository, subscription_id)  # recorded already, paid or cancelled
    await audit.record(
        session, action="subscription.checkout_opened", target_type="subscription", target_id=recorded.id,
        account_id=recorded.account_id,
        after={"checkout_session_id": started.external_id, "plan": plan.code, "stripe_price_id": started.price_id},
    )
    return recorded, plan


async def _remember_customer(session: AsyncSession, account: Account, started: CheckoutResult) -> None:
    """The provider's customer a checkout was made for becomes the account's (created once: later checkouts
    reuse it)."""
    if started.customer_id and account.provider_customer_id is None:
        account.provider_customer_id = started.customer_id
        await audit.record(
            session, action="account.payment_customer_created", target_type="account", target_id=account.id,
            account_id=account.id, before={"provider_customer_id": None},
            after={"provider_customer_id": started.customer_id},
        )


async def _subscription_by_id(
    repository: BillingRepository, subscription_id: uuid.UUID
) -> tuple[Subscription, Plan]:
    found = await repository.subscription_by_id(subscription_id)
    if found is None:
        raise NotFound("Subscription not found", code="subscription_not_found")
    return found


async def mark_paid(
    session: AsyncSession, *, subscription_id: uuid.UUID, recorded_by: uuid.UUID
) -> tuple[Subscription, Plan]:
    """A platform admin confirms the payment of a pending (manual) subscription: it becomes active for one
    interval from now, and the payment lifts the account's `billing` hold — only that one. The payment is
    the subscription's first payments row (the pending → active compare-and-set makes it the only one)."""
    repository = BillingRepository(session)
    pending, plan = await _subscription_by_id(repository, subscription_id)
    account = await _locked_account(repository, pending.account_id)
    pending_end, now = pending.current_period_end, utcnow()
    end = periods.period_end(now, interval=pending.interval, free=is_free(pending))
    subscription = await repository.activate_pending(subscription_id, start=now, end=end)
    if subscription is None:
        raise Conflict("Only a pending subscription can be marked paid", code="subscription_not_pending")
    await repository.add(Payment(
        subscription_id=subscription.id, account_id=account.id, provider=subscription.provider,
        period_start=pending_end, period_end=end, amount_minor=pending.price_minor, currency=pending.currency,
        source="admin", recorded_by=recorded_by,
    ))
    await credits.grant_period_credits(
        session, account_id=account.id, subscription_id=subscription.id, plan=plan, period_start=pending_end,
        period_end=end,
    )
    await audit.record(
        session, action="subscription.marked_paid", target_type="subscription", target_id=subscription.id,
        account_id=account.id, before={"status": "pending"},
        after={"plan": plan.code, **_period_fields(subscription)},
    )
    await _account_entitled_by(session, account, plan, payment=True)
    request_reconcile(account.id)
    return subscription, plan


async def _subscription_of(repository: BillingRepository, account_id: uuid.UUID,
                           subscription_id: uuid.UUID) -> tuple[Subscription, Plan]:
    found = await repository.subscription_of(account_id, subscription_id)
    if found is None:
        raise NotFound("Subscription not found", code="subscription_not_found")
    return found


@dataclass(frozen=True)
class PaymentReport:
    """Who reports the next period as paid, and what was paid (minor units of the plan's currency)."""

    source: str  # admin | customer
    amount_minor: int
    external_reference: str | None
    recorded_by: uuid.UUID | None


async def _already_paid(
    repository: BillingRepository, subscription: Subscription, period_start: datetime | None
) -> bool:
    """A renewal pays for the period starting at the current period end, unless it names another. A named
    period that is paid already makes it a repeat: nothing to do. Any other period is a stale view."""
    if period_start is None or period_start == subscription.current_period_end:
        return False
    if await repository.is_paid(subscription.id, period_start):
        return True
    raise Conflict(
        "That is not the subscription's next period; reload the subscription and renew the period it names",
        code="renewal_period_mismatch",
        details={
            "period_start": period_start.isoformat(),
            "next_period_start": subscription.current_period_end.isoformat(),
        },
    )


def _refuse_unless_renewable(subscription: Subscription) -> None:
    if subscription.status == "cancelled":
        raise Conflict("A cancelled subscription cannot be renewed; check out again", code="subscription_cancelled")
    if subscription.status == "pending":
        raise Conflict("The subscription is waiting for its payment", code="subscription_pending")


async def _period_starts(repository: BillingRepository, subscription: Subscription) -> list[datetime]:
    """The starts of the periods the current one is made of: its own start, then each paid period's."""
    paid = await repository.paid_period_starts(
        subscription.id, after=subscription.current_period_start, before=subscription.current_period_end
    )
    return [subscription.current_period_start, *paid]


async def _renew_once(
    session: AsyncSession,
    repository: BillingRepository,
    subscription: Subscription,
    plan: Plan,
    report: PaymentReport,
    *,
    starts: list[datetime],
    now: datetime,
    lifts_billing_hold: bool,
) -> tuple[Subscription, Plan]:
    """Pay the period that follows the current period end, once: the payments row claims (subscription,
    period) and the extension is a compare-and-set on the period end, in one transaction. A concurrent
    renewal of the same period waits for this one and then answers with its result."""
    seen_end = subscription.current_period_end
    free = is_free(subscription)
    if seen_end >= now:
        # Still running: the period follows on, anchored on the day the periods began. The subscription then
        # starts at the period running now (never at a future one: that would entitle nothing until then).
        start = max(moment for moment in starts if moment <= now)
        anchor = periods.anchor_day([*starts, seen_end])
        end = periods.period_end(seen_end, interval=subscription.interval, free=free, anchor_day=anchor)
    else:  # lapsed: a fresh period from now
        start, end = now, periods.period_end(now, interval=subscription.interval, free=free)
    claimed = await repository.claim_period(
        subscription, period_start=seen_end, period_end=end, amount_minor=report.amount_minor,
        currency=subscription.currency, source=report.source, external_reference=report.external_reference,
        recorded_by=report.recorded_by,
    )
    if not claimed:
        return await _subscription_by_id(repository, subscription.id)
    before = _period_fields(subscription)
    renewed = await repository.extend_period(subscription.id, seen_end=seen_end, start=start, end=end)
    if renewed is None:
        raise Conflict(
            "The subscription changed while it was being renewed; reload it and try again",
            code="subscription_changed",
        )
    # The plan's credits for the period paid (from its start, when paid ahead), once per (subscription, period).
    await credits.grant_period_credits(
        session, account_id=renewed.account_id, subscription_id=renewed.id, plan=plan, period_start=seen_end,
        period_end=end,
    )
    payment = {
        "period_start": seen_end.isoformat(), "amount_minor": report.amount_minor, "currency": subscription.currency,
        "source": report.source, "external_reference": report.external_reference,
    }
    await audit.record(
        session, action="subscription.renewed", target_type="subscription", target_id=renewed.id,
        account_id=renewed.account_id, before=before, after={**_period_fields(renewed), "payment": payment},
    )
    if lifts_billing_hold:
        account = await _locked_account(repository, renewed.account_id)
        await _account_entitled_by(session, account, plan, payment=True)
    request_reconcile(renewed.account_id)
    return renewed, plan


async def renew(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    subscription_id: uuid.UUID,
    period_start: datetime | None,
    renewed_by: uuid.UUID,
    free_renewal_window: timedelta,
    providers: PaymentProviders,
) -> tuple[Subscription, Plan]:
    """A customer renews for the period after the current one (or the one `period_start` names; naming a
    period that is paid already answers the subscription as it is). A free plan renews only in the last
    `free_renewal_window` of its period, or once it has lapsed, so never more than one period ahead. A paid
    plan renews with its payment (`record_payment`) unless its provider says otherwise. Renewing withdraws a
    scheduled cancellation (it says the customer stays)."""
    repository = BillingRepository(session)
    subscription, plan = await _subscription_of(repository, account_id, subscription_id)
    if await _already_paid(repository, subscription, period_start):
        return subscription, plan
    _refuse_unless_renewable(subscription)
    provider = providers.named(subscription.provider)
    if not is_free(subscription) and not (provider and provider.customer_can_renew_without_payment):
        raise Conflict(
            "A paid plan renews when its payment is recorded", code="payment_required",
            details={"plan": plan.code},
        )
    starts = await _period_starts(repository, subscription)
    now = utcnow()
    if is_free(subscription):
        # Never before the last paid period has begun: at most the running period and the next are paid.
        opens_at = max(subscription.current_period_end - free_renewal_window, starts[-1])
        if now < opens_at:
            raise Conflict(
                f"A free plan renews in the last {free_renewal_window.days} days of its period",
                code="renewal_not_open",
                details={"opens_at": opens_at.isoformat(),
                         "current_period_end": subscription.current_period_end.isoformat()},
            )
    report = PaymentReport(source="customer", amount_minor=0, external_reference=None, recorded_by=renewed_by)
    return await _renew_once(
        session, repository, subscription, plan, report, starts=starts, now=now, lifts_billing_hold=False
    )


async def record_payment(
    session: AsyncSession,
    *,
    subscription_id: uuid.UUID,
    period_start: datetime,
    amount_minor: int | None,
    external_reference: str | None,
    recorded_by: uuid.UUID,
) -> tuple[Subscription, Plan]:
    """A platform admin records the payment of an active subscription's period starting at `period_start` (its
    current period end): the period is extended once and the account's `billing` hold (only that one) is
    lifted. The amount defaults to the plan's price. Recording a period that is paid already changes
    nothing."""
    repository = BillingRepository(session)
    subscription, plan = await _subscription_by_id(repository, subscription_id)
    if await _already_paid(repository, subscription, period_start):
        return subscription, plan
    _refuse_unless_renewable(subscription)
    report = PaymentReport(
        source="admin", amount_minor=subscription.price_minor if amount_minor is None else amount_minor,
        external_reference=external_reference, recorded_by=recorded_by,
    )
    starts = await _period_starts(repository, subscription)
    return await _renew_once(
        session, repository, subscription, plan, report, starts=starts, now=utcnow(), lifts_billing_hold=True
    )


async def renew_contract_periods(session: AsyncSession, *, account_id: uuid.UUID, now: datetime) -> int:
    """The account's prepaid contract pays the next period of each subscription it pays whose period ends within
    CONTRACT_RENEWAL_LEAD (or has lapsed), while the contract runs on past that period's start: renewed as a
    payment would renew it, once per period (its claim is recorded at 0, source `contract`, the deal as
    reference). A subscription cancelling at its period end is left to end. Returns how many were renewed."""
    repository = BillingRepository(session)
    account = await _locked_account(repository, account_id)
    ends = account.contract_ends_at
    if account.billing_mode != BillingMode.prepaid or ends is None or ends <= now:
        return 0
    report = PaymentReport(source="contract", amount_minor=0, external_reference=account.contract_ref,
                           recorded_by=None)
    renewed = 0
    for subscription, plan in await repository.all_of(account.id):
        paid_by_contract = subscription.provider == CONTRACT_PROVIDER and subscription.status == "active"
        if not paid_by_contract or subscription.cancel_at_period_end:
            continue
        if subscription.current_period_end > now + CONTRACT_RENEWAL_LEAD or subscription.current_period_end >= ends:
            continue  # not due yet, or the contract ends before the next period would start
        starts = await _period_starts(repository, subscription)
        await _renew_once(session, repository, subscription, plan, report, starts=starts, now=now,
                          lifts_billing_hold=False)
        renewed += 1
    return renewed


async def cancel(
    session: AsyncSession, *, account_id: uuid.UUID, subscription_id: uuid.UUID, at: CancelAt
) -> tuple[Subscription, Plan]:
    """`now`: entitlement ends at once. `period_end`: it runs to the end of the paid period and is not renewed."""
    repository = BillingRepository(session)
    subscription, plan = await _subscription_of(repository, account_id, subscription_id)
    if subscription.status == "cancelled":
        raise Conflict("The subscription is already cancelled", code="subscription_cancelled")
    if at == CancelAt.period_end and subscription.status == "pending":
        raise Conflict("A pending subscription has no period to run out; cancel it now", code="subscription_pending")
    if at == CancelAt.period_end and subscription.cancel_at_period_end:
        return subscription, plan  # already scheduled: nothing changes
    before = _period_fields(subscription)
    cancelled = await repository.cancel(subscription.id, now=utcnow() if at == CancelAt.now else None)
    if cancelled is None:
        raise Conflict("The subscription is already cancelled", code="subscription_cancelled")
    await audit.record(
        session, action="subscription.cancelled" if at == CancelAt.now else "subscription.cancel_scheduled",
        target_type="subscription", target_id=cancelled.id, account_id=account_id,
        before=before, after=_period_fields(cancelled),
    )
    request_reconcile(account_id)
    return cancelled, plan


# --- a provider's records (Stripe) ----------------------------------------------------------------------------------
# Applied from the object as the provider holds it now, never from an event's payload or from arrival order, so
# any order and any number of deliveries end in the same state (REFERENCE §1 F2, F4, F10, F17). The caller holds
# the account's lock from before it read the object until it commits: the last read is the one applied.

# Stripe subscription states that run a period (past_due and unpaid owe for it: the dunning policy decides), and
# those that ended it. `incomplete` has not started: the subscription stays pending.
PROVIDER_RUNNING = frozenset({"active", "trialing", "past_due", "unpaid", "paused"})
PROVIDER_OWED = frozenset({"past_due", "unpaid", "paused"})
PROVIDER_ENDED = frozenset({"canceled", "incomplete_expired"})


async def _provider_row(
    repository: BillingRepository, account_id: uuid.UUID, external_id: str | None, ours: uuid.UUID | None
) -> tuple[Subscription, Plan] | None:
    """Our subscription for the provider's: linked by its id, or named in its metadata (only within the account:
    metadata is the customer's to see, never a key to another tenant's row)."""
    found = await repository.subscription_by_external_id(external_id) if external_id else None
    if found is None and ours is not None:
        found = await repository.subscription_of(account_id, ours)
        if found is not None and found[0].external_id not in (None, external_id):
            return None  # linked to another provider subscription already
    if found is not None and found[0].account_id != account_id:
        return None
    return found


def _sync_fields(subscription: Subscription) -> dict[str, Any]:
    return {**_period_fields(subscription), "external_id": subscription.external_id}


async def apply_provider_checkout(session: AsyncSession, *, account_id: uuid.UUID, checkout: ProviderCheckout) -> bool:
    """A completed checkout links our pending subscription to the provider's; an expired one lapses it. False
    when no subscription of the account is named (the event is then flagged, not applied)."""
    repository = BillingRepository(session)
    await _locked_account(repository, account_id)
    found = await _provider_row(repository, account_id, checkout.subscription_ref, checkout.our_subscription_id)
    if found is None:
        return False
    subscription, _ = found
    if checkout.status == "expired":
        await _end_abandoned_checkout(session, repository, subscription, utcnow())
    elif checkout.status == "complete" and checkout.subscription_ref and subscription.external_id is None:
        subscription.external_id = checkout.subscription_ref
        await audit.record(
            session, action="subscription.linked", target_type="subscription", target_id=subscription.id,
            account_id=account_id, before={"external_id": None}, after={"external_id": checkout.subscription_ref},
        )
    return True


async def apply_provider_subscription(
    session: AsyncSession, *, account_id: uuid.UUID, snapshot: ProviderSubscription
) -> bool:
    """Make our subscription say what the provider's says: status, period, scheduled cancellation; and the
    account owe (past due since the unpaid period began) or not (the payment lifts only the `billing` hold)."""
    repository = BillingRepository(session)
    account = await _locked_account(repository, account_id)
    found = await _provider_row(repository, account_id, snapshot.external_id, snapshot.our_subscription_id)
    if found is None:
        return False
    subscription, plan = found
    if snapshot.price_ref is not None and snapshot.price_ref != subscription.stripe_price_id:
        # Its plan changed (through our API or the provider's portal): the price says to which plan.
        sold = await CatalogRepository(session).plan_for_price(
            snapshot.price_ref, plan_of_lookup_key(snapshot.price_lookup_key))
        if sold is None:
            return False  # a price we do not sell: flagged for admins, not applied
        plan = await _sell_plan(session, subscription, sold, price_ref=snapshot.price_ref)
    before = _sync_fields(subscription)
    subscription.external_id = snapshot.external_id
    if snapshot.status in PROVIDER_ENDED:
        if subscription.status != "cancelled":
            subscription.status = "cancelled"
            subscription.cancelled_at = snapshot.ended_at or utcnow()
    elif snapshot.status in PROVIDER_RUNNING:
        subscription.status = "active"
        subscription.current_period_start = snapshot.period_start
        subscription.current_period_end = snapshot.period_end
        subscription.cancel_at_period_end = snapshot.cancel_at_period_end
        subscription.cancelled_at = None
    after = _sync_fields(subscription)
    if before != after:
        await session.flush()
        await audit.record(
            session, action="subscription.synced", target_type="subscription", target_id=subscription.id,
            account_id=account_id, before=before, after={**after, "provider_status": snapshot.status},
        )
    if snapshot.status in PROVIDER_OWED:
        if account.past_due_since is None:
            account.past_due_since = snapshot.period_start
        await _account_entitled_by(session, account, plan, payment=False)
    elif snapshot.status in ("active", "trialing"):
        await _account_entitled_by(session, account, plan, payment=True)
    request_reconcile(account_id)
    return True


async def apply_provider_invoice(session: AsyncSession, *, account_id: uuid.UUID, invoice: ProviderInvoice) -> bool:
    """A paid invoice is the payment of the period it bills: one `payments` row per (subscription, period),
    whichever path reports it first. False when it bills no subscription of the account."""
    repository = BillingRepository(session)
    await _locked_account(repository, account_id)
    found = await _provider_row(repository, account_id, invoice.subscription_ref, None)
    if found is None:
        return False
    subscription, _ = found
    if invoice.status == "paid":
        claimed = await repository.claim_period(
            subscription, period_start=invoice.period_start, period_end=invoice.period_end,
            amount_minor=invoice.amount_paid, currency=invoice.currency, source="webhook",
            external_reference=invoice.external_id, recorded_by=None,
        )
        if claimed:
            await audit.record(
                session, action="subscription.payment_recorded", target_type="subscription",
                target_id=subscription.id, account_id=account_id,
                after={"invoice": invoice.external_id, "period_start": invoice.period_start.isoformat(),
                       "period_end": invoice.period_end.isoformat(), "amount_minor": invoice.amount_paid,
                       "currency": invoice.currency},
            )
    return True


async def provider_managed(
    session: AsyncSession, *, account_id: uuid.UUID, subscription_id: uuid.UUID, providers: PaymentProviders
) -> tuple[ProviderRecords, str] | None:
    """The provider running a subscription and its id there (a Stripe subscription after its checkout): its
    cancellation goes through the provider, whose records are then applied. None: ours alone to change."""
    subscription, _ = await _subscription_of(BillingRepository(session), account_id, subscription_id)
    records = providers.records(subscription.provider)
    if records is None or subscription.external_id is None:
        return None
    if subscription.status == "cancelled":
        raise Conflict("The subscription is already cancelled", code="subscription_cancelled")
    return records, subscription.external_id


async def record_cancellation_request(
    session: AsyncSession, *, account_id: uuid.UUID, subscription_id: uuid.UUID, at: CancelAt,
    snapshot: ProviderSubscription,
) -> tuple[Subscription, Plan]:
    """The provider confirmed the cancellation a customer asked for: its record is applied, and who asked is
    audited."""
    await apply_provider_subscription(session, account_id=account_id, snapshot=snapshot)
    await audit.record(
        session, action="subscription.cancel_requested", target_type="subscription", target_id=subscription_id,
        account_id=account_id, after={"at": at.value, "provider_status": snapshot.status,
                                      "cancel_at_period_end": snapshot.cancel_at_period_end},
    )
    return await _subscription_of(BillingRepository(session), account_id, subscription_id)


def portal_customer(account: Account) -> str:
    """The account's customer at the payment provider, for its billing portal."""
    if account.provider_customer_id is None:
        raise Conflict("The account has no card payments yet: check out a plan first", code="no_payment_customer")
    return account.provider_customer_id


# --- plan changes ---------------------------------------------------------------------------------------------


async def plan_change_target(
    session: AsyncSession, *, account: Account, subscription_id: uuid.UUID, plan_code: str
) -> tuple[Subscription, Plan]:
    """The subscription and the plan it may change to (an upgrade or a downgrade between paid plans of the same
    currency and interval), or the clear refusal."""
    subscription, current = await _subscription_of(BillingRepository(session), account.id, subscription_id)
    if subscription.status == "cancelled":
        raise Conflict("The subscription is cancelled: check out again", code="subscription_cancelled")
    if subscription.status == "pending":
        raise Conflict("The subscription waits for its first payment", code="subscription_pending")
    plan = await CatalogRepository(session).plan_by_code(plan_code)
    if plan is None:
        raise NotFound(f"No plan {plan_code!r}", code="plan_not_found")
    if plan.retired_at is not None:
        raise Conflict(f"The plan {plan_code!r} is retired", code="plan_retired")
    if plan.id == current.id:
        raise Conflict(f"The subscription is on {plan_code!r} already", code="plan_unchanged")
    if is_free(plan) or is_free(subscription) or (plan.currency, plan.interval) != (
            subscription.currency, subscription.interval):
        raise Conflict("Only a paid plan of the same currency and interval can replace a paid plan; for any other "
                       "change, cancel and check out the new plan", code="plan_change_not_supported",
                       details={"currency": subscription.currency, "interval": subscription.interval})
    if account.billing_mode.value not in plan.billing_modes:
        raise Conflict(f"The plan {plan_code!r} is not available to accounts billed by {account.billing_mode.value}",
                       code="billing_mode_not_allowed")
    return subscription, plan


def provider_change_key(subscription: Subscription, plan: Plan) -> str:
    """Names one change at the provider: a retry of it is the same change; a later change back is not."""
    return f"change-plan:{subscription.id}:{subscription.plan_changes}:{plan.code}:{plan.version}"


async def change_plan_off_platform(
    session: AsyncSession, *, account_id: uuid.UUID, subscription_id: uuid.UUID, plan_code: str
) -> tuple[Subscription, Plan, int]:
    """A subscription paid off-platform changes plan at once; the prorated difference for the rest of the period
    (positive: owed, negative: a credit) is answered and audited for the operator to bill or credit."""
    account = await _locked_account(BillingRepository(session), account_id)
    subscription, plan = await plan_change_target(
        session, account=account, subscription_id=subscription_id, plan_code=plan_code)
    proration = periods.prorated_difference(
        subscription.price_minor, plan.price_minor, start=subscription.current_period_start,
        end=subscription.current_period_end, at=utcnow())
    await _sell_plan(session, subscription, plan, price_ref=plan.stripe_price_id, proration_minor=proration)
    return subscription, plan, proration


async def record_plan_change_request(
    session: AsyncSession, *, account_id: uuid.UUID, subscription_id: uuid.UUID, plan: Plan,
    snapshot: ProviderSubscription,
) -> tuple[Subscription, Plan]:
    """The provider's answer to a plan change a customer asked for is applied (the plan follows its price; with
    the prorated payment still due, the old plan stays until it is paid), and who asked is audited."""
    await apply_provider_subscription(session, account_id=account_id, snapshot=snapshot)
    await audit.record(
        session, action="subscription.plan_change_requested", target_type="subscription", target_id=subscription_id,
        account_id=account_id, after={"plan": plan.code, "plan_version": plan.version,
                                      "pending_payment": snapshot.pending_update},
    )
    return await _subscription_of(BillingRepository(session), account_id, subscription_id)


async def _sell_plan(session: AsyncSession, subscription: Subscription, plan: Plan, *, price_ref: str | None,
                     proration_minor: int | None = None) -> Plan:
    """From now on the subscription is sold at `plan`'s current version: its terms, quotas and price."""
    before = {"plan_id": str(subscription.plan_id), "plan_version": subscription.plan_version,
              "price_minor": subscription.price_minor}
    subscription.plan_id = plan.id
    for name, value in sold_terms(plan).items():
        setattr(subscription, name, value)
    subscription.stripe_price_id = price_ref
    subscription.plan_changes += 1
    await session.flush()
    after = {"plan_id": str(plan.id), "plan": plan.code, "plan_version": plan.version,
             "price_minor": plan.price_minor, "proration_minor": proration_minor}
    await audit.record(session, action="subscription.plan_changed", target_type="subscription",
                       target_id=subscription.id, account_id=subscription.account_id, before=before, after=after)
    request_reconcile(subscription.account_id)
    return plan


# --- credit packs ---------------------------------------------------------------------------------------------


async def buy_credit_pack(
    session: AsyncSession, *, account_id: uuid.UUID, pack_code: str, provider: PaymentProvider, base_url: str
) -> tuple[CreditPurchase, PackCheckoutRequest | None]:
    """A pending purchase of the pack, keeping what is sold; the credits come only with the confirmed payment.
    With a hosted checkout (Stripe), what the provider needs is returned, to call it after this transaction."""
    account = await _locked_account(BillingRepository(session), account_id)
    pack = next((p for p in load_credit_packs() if p.code == pack_code), None)
    if pack is None:
        raise NotFound(f"No credit pack {pack_code!r}", code="credit_pack_not_found")
    if account.billing_mode.value not in pack.billing_modes:
        raise Conflict(f"The pack {pack_code!r} is not sold to accounts billed by {account.billing_mode.value}",
                       code="billing_mode_not_allowed",
                       details={"billing_mode": account.billing_mode.value, "allowed": list(pack.billing_modes)})
    if account.status == AccountStatus.terminated:
        raise Conflict("The account is terminated", code="account_terminated")
    purchase = await BillingRepository(session).add_purchase(CreditPurchase(
        account_id=account.id, pack_code=pack.code, credits=pack.credits, price_minor=pack.price_minor,
        currency=pack.currency, provider=provider.name, status="pending"))
    await audit.record(session, action="credit_pack.purchase_started", target_type="credit_purchase",
                       target_id=purchase.id, account_id=account.id,
                       after={"pack": pack.code, "credits": pack.credits, "price_minor": pack.price_minor,
                              "currency": pack.currency, "provider": provider.name})
    if not provider.hosted_checkout:
        return purchase, None
    back = f"{base_url}/billing/credits?purchase={purchase.id}"
    return purchase, PackCheckoutRequest(
        account_id=account.id, account_name=account.name, billing_email=account.billing_email,
        customer_id=account.provider_customer_id, purchase_id=purchase.id, pack_code=pack.code,
        pack_name=pack.name, price_minor=pack.price_minor, currency=pack.currency,
        success_url=f"{back}&result=paid", cancel_url=f"{back}&result=cancelled")


async def record_pack_checkout(session: AsyncSession, *, purchase_id: uuid.UUID,
                               started: CheckoutResult) -> CreditPurchase:
    """Keep the provider's checkout of a pending purchase (and the account's customer, made once)."""
    repository = BillingRepository(session)
    purchase = await repository.purchase(purchase_id)
    if purchase is None:
        raise NotFound("Credit purchase not found", code="credit_purchase_not_found")
    await _remember_customer(session, await _locked_account(repository, purchase.account_id), started)
    await repository.record_pack_checkout(purchase_id, session_id=started.external_id, url=started.checkout_url)
    return await repository.purchase(purchase_id) or purchase


async def apply_pack_checkout(session: AsyncSession, *, account_id: uuid.UUID, checkout: ProviderCheckout) -> bool:
    """A pack's checkout as the provider holds it: paid (now, or once a bank debit clears) grants the credits
    once; expired ends the purchase. False when it names no purchase of the account (flagged, not applied)."""
    repository = BillingRepository(session)
    await _locked_account(repository, account_id)
    purchase = await repository.purchase_of(account_id, checkout.our_purchase_id) if checkout.our_purchase_id else None
    if purchase is None or purchase.checkout_session_id not in (None, checkout.external_id):
        return False
    if checkout.status == "complete" and checkout.payment_status in ("paid", "no_payment_required"):
        await _pack_paid(session, purchase.id, reference=checkout.payment_ref or checkout.external_id,
                         source="provider")
    elif checkout.status == "expired":
        ended = await repository.settle_purchase(purchase.id, status="expired", reference=None, now=utcnow())
        if ended is not None:
            await audit.record(session, action="credit_pack.purchase_expired", target_type="credit_purchase",
                               target_id=ended.id, account_id=account_id, after={"status": "expired"})
    return True


async def mark_pack_paid(session: AsyncSession, *, purchase_id: uuid.UUID, reference: str | None,
                         providers: PaymentProviders) -> CreditPurchase:
    """An operator confirms the off-platform payment of a pack: its credits are granted once (a repeat answers
    the same purchase). One paid at a provider's hosted checkout is confirmed by the provider only."""
    repository = BillingRepository(session)
    purchase = await repository.purchase(purchase_id)
    if purchase is None:
        raise NotFound("Credit purchase not found", code="credit_purchase_not_found")
    await _locked_account(repository, purchase.account_id)
    purchase = await repository.purchase(purchase_id) or purchase
    provider = providers.named(purchase.provider)
    if provider is not None and provider.hosted_checkout:
        raise Conflict("A card purchase is confirmed by the payment provider", code="paid_by_provider")
    if purchase.status == "expired":
        raise Conflict("The purchase has expired", code="credit_purchase_expired")
    if purchase.status == "pending":
        await _pack_paid(session, purchase.id, reference=reference, source="admin")
    return await repository.purchase(purchase_id) or purchase


async def _pack_paid(session: AsyncSession, purchase_id: uuid.UUID, *, reference: str | None, source: str) -> None:
    paid = await BillingRepository(session).settle_purchase(purchase_id, status="paid", reference=reference,
                                                            now=utcnow())
    if paid is None:
        return  # confirmed before, by this path or another
    await credits.grant_pack(session, account_id=paid.account_id, credits=paid.credits,
                             payment_reference=reference or str(paid.id), idempotency_key=f"pack:{paid.id}")
    await audit.record(session, action="credit_pack.paid", target_type="credit_purchase", target_id=paid.id,
                       account_id=paid.account_id,
                       after={"pack": paid.pack_code, "credits": paid.credits, "source": source,
                              "payment_reference": reference})


# --- dunning e-mails ----------------------------------------------------------------------------------------

DUNNING_TEMPLATES = {"payment_failed": "payment_failed", "reminder": "payment_reminder",
                     "suspension_warning": "suspension_warning", "suspended": "account_suspended",
                     "restored": "account_restored"}


async def send_dunning_notice(
    session: AsyncSession, settings: Settings, account: DunningRecipient, *, past_due_since: datetime | None,
    stage: DunningStage | None, suspends_at: datetime | None, now: datetime,
) -> str | None:
    """The e-mail a past-due episode's stage calls for, claimed once (compare-and-set) and queued with its audit
    entry in the caller's transaction; "restored" once the episode ends, only when its suspension was announced.
    Returns the kind queued, if any."""
    repository = BillingRepository(session)
    episode = past_due_since
    if stage is None or episode is None:
        if account.dunning_episode is None or not await repository.close_dunning_episode(account.id, account.dunning_episode):
            return None
        episode = account.dunning_episode
        if not await repository.dunning_notice_sent(account.id, episode, "suspended"):
            return None
        kind, step = "restored", 0
    else:
        if account.dunning_episode != episode:
            await repository.open_dunning_episode(account.id, episode)
        kind, step = stage.kind, stage.step
    if not await repository.claim_dunning_notice(account.id, episode, kind, step, now):
        return None
    await audit.record(session, action="account.dunning_notice_sent", target_type="account", target_id=account.id,
                       account_id=account.id, actor=context.SYSTEM,
                       after={"kind": kind, "step": step, "episode": episode.isoformat()})
    if account.billing_email:
        values = {"account_name": account.name, "base_url": settings.base_url,
                  "suspends_at": f"{suspends_at:%Y-%m-%d %H:%M} UTC" if suspends_at else ""}
        await queue_email(session, to=account.billing_email, template=DUNNING_TEMPLATES[kind], values=values)
    return kind
