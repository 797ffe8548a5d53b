"""Checkout, renewal, cancellation and payment confirmation. These record billing facts only (DESIGN §2):
each asks for a reconcile of the account, deferred after the commit. Never commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit
from jushostit.billing import periods
from jushostit.billing.provider import PaymentProvider
from jushostit.billing.repository import BillingRepository
from jushostit.billing.schemas import CancelAt
from jushostit.catalog.repository import CatalogRepository
from jushostit.kit.db import utcnow
from jushostit.kit.errors import Conflict, NotFound
from jushostit.models import Account, AccountStatus, Plan, Subscription, SuspensionReason
from jushostit.reconcile.trigger import request_reconcile


@dataclass(frozen=True)
class CheckoutOutcome:
    subscription: Subscription
    plan: Plan
    checkout_url: str | None


def is_free(plan: Plan) -> bool:
    return plan.price_minor == 0


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


async def _account_entitled_by(session: AsyncSession, account: Account, plan: Plan, *, payment: bool) -> None:
    """The account's facts once a subscription to `plan` is active. A payment lifts only the `billing` hold and
    the past-due clock; every other hold stays (REFERENCE §1 F4, F14). The plan's default budget applies when
    the account has none."""
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
    if account.budget_minor is None and plan.default_budget_minor is not None:
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
    session: AsyncSession, *, account_id: uuid.UUID, plan_code: str, provider: PaymentProvider
) -> CheckoutOutcome:
    """A free plan is active at once for 30 days; a paid plan starts a payment at the provider and stays
    pending until the payment is confirmed."""
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
    existing = await repository.open_subscription_to(account.id, plan.id, now)
    if existing is not None:
        raise Conflict(
            f"The account already has a {existing.status} subscription to {plan_code!r}; renew it instead",
            code="already_subscribed",
            details={"subscription_id": str(existing.id)},
        )

    checkout_url = None
    if is_free(plan):
        subscription = Subscription(
            account_id=account.id, plan_id=plan.id, provider="manual", status="active",
            current_period_start=now,
            current_period_end=periods.period_end(now, interval=plan.interval, free=True),
        )
    else:
        started = await provider.start_checkout(account, plan)
        checkout_url = started.checkout_url
        # No period until the payment is confirmed: an empty one, which entitles nothing.
        subscription = Subscription(
            account_id=account.id, plan_id=plan.id, provider=provider.name, status="pending",
            current_period_start=now, current_period_end=now,
        )
    await repository.add(subscription)
    await audit.record(
        session, action="subscription.created", target_type="subscription", target_id=subscription.id,
        account_id=account.id,
        after={"plan": plan.code, "provider": subscription.provider, **_period_fields(subscription)},
    )
    if subscription.status == "active":
        await _account_entitled_by(session, account, plan, payment=False)
    request_reconcile(account.id)
    return CheckoutOutcome(subscription, plan, checkout_url)


async def mark_paid(session: AsyncSession, *, subscription_id: uuid.UUID) -> tuple[Subscription, Plan]:
    """A platform admin confirms the payment of a pending (manual) subscription: it becomes active for one
    interval from now, and the payment lifts the account's `billing` hold — only that one."""
    repository = BillingRepository(session)
    found = await repository.subscription_by_id(subscription_id)
    if found is None:
        raise NotFound("Subscription not found", code="subscription_not_found")
    _, plan = found
    account = await _locked_account(repository, found[0].account_id)
    now = utcnow()
    end = periods.period_end(now, interval=plan.interval, free=is_free(plan))
    subscription = await repository.activate_pending(subscription_id, start=now, end=end)
    if subscription is None:
        raise Conflict("Only a pending subscription can be marked paid", code="subscription_not_pending")
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


async def renew(
    session: AsyncSession, *, account_id: uuid.UUID, subscription_id: uuid.UUID, paid: bool = False
) -> tuple[Subscription, Plan]:
    """Extend the period by one interval from max(period end, now). The extension is a compare-and-set on the
    period end the renewal saw, so two renewals of one period never both apply; a scheduled cancellation is
    withdrawn (renewing says the customer stays). A paid plan on the manual provider renews only when an
    operator records the payment (`paid=True`), which also lifts the `billing` hold."""
    repository = BillingRepository(session)
    subscription, plan = await _subscription_of(repository, account_id, subscription_id)
    if subscription.status == "cancelled":
        raise Conflict("A cancelled subscription cannot be renewed; check out again", code="subscription_cancelled")
    if subscription.status == "pending":
        raise Conflict("The subscription is waiting for its payment", code="subscription_pending")
    if not is_free(plan) and subscription.provider == "manual" and not paid:
        raise Conflict(
            "A paid plan renews when its payment is recorded by an operator", code="payment_required",
            details={"plan": plan.code},
        )
    now = utcnow()
    before = _period_fields(subscription)
    seen_end = subscription.current_period_end
    if seen_end >= now:  # still running: the new period follows on, anchored on the original start day
        start, base, anchor = subscription.current_period_start, seen_end, subscription.current_period_start.day
    else:  # lapsed: a fresh period from now
        start, base, anchor = now, now, now.day
    end = periods.period_end(base, interval=plan.interval, free=is_free(plan), anchor_day=anchor)
    renewed = await repository.extend_period(subscription.id, seen_end=seen_end, start=start, end=end)
    if renewed is None:
        raise Conflict(
            "The subscription changed while it was being renewed; reload it and try again",
            code="subscription_changed",
        )
    await audit.record(
        session, action="subscription.renewed", target_type="subscription", target_id=renewed.id,
        account_id=account_id, before=before, after={**_period_fields(renewed), "paid": paid},
    )
    if paid:
        await _account_entitled_by(session, await _locked_account(repository, account_id), plan, payment=True)
    request_reconcile(account_id)
    return renewed, plan


async def renew_paid(session: AsyncSession, *, subscription_id: uuid.UUID) -> tuple[Subscription, Plan]:
    """A platform admin records the payment of the next period of an active (manual) subscription."""
    found = await BillingRepository(session).subscription_by_id(subscription_id)
    if found is None:
        raise NotFound("Subscription not found", code="subscription_not_found")
    return await renew(session, account_id=found[0].account_id, subscription_id=subscription_id, paid=True)


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
