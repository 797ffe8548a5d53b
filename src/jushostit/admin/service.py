"""Platform-admin actions on accounts (each a fact change: audited, then a reconcile is requested) and on users."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit
from jushostit.billing import service as billing
from jushostit.billing.facts import effective_dunning, stored_durations
from jushostit.events.repository import EventRepository
from jushostit.kit import context
from jushostit.kit.db import utcnow
from jushostit.kit.errors import BadRequest, Conflict
from jushostit.kit.schemas import iso_duration
from jushostit.models import Account, AccountStatus, BillingMode, SuspensionReason, User
from jushostit.triggers import request_reconcile


async def suspend(session: AsyncSession, *, account: Account, reason: SuspensionReason, note: str | None) -> Account:
    before = sorted(account.suspension_reasons)
    if reason.value not in account.suspension_reasons:
        account.suspension_reasons = sorted({*account.suspension_reasons, reason.value})
    if account.status in {AccountStatus.active, AccountStatus.past_due, AccountStatus.pending}:
        account.status = AccountStatus.suspended
    await audit.record(session, action="admin.account_suspended", target_type="account", target_id=account.id,
                       account_id=account.id, before={"reasons": before},
                       after={"reasons": account.suspension_reasons, "note": note})
    await _publish_status(session, account)
    request_reconcile(account.id)
    return account


async def _publish_status(session: AsyncSession, account: Account) -> None:
    await EventRepository(session).publish({"type": "account.status", "account_id": str(account.id),
                                            "status": account.status.value, "reasons": account.suspension_reasons})


async def unsuspend(session: AsyncSession, *, account: Account, reason: SuspensionReason) -> Account:
    """Lift only `reason`; the others stay (a payment never lifts an admin hold, nor this the reverse)."""
    if reason.value not in account.suspension_reasons:
        raise Conflict(f"The account is not suspended for {reason.value}", code="not_suspended",
                       details={"suspension_reasons": account.suspension_reasons})
    before = sorted(account.suspension_reasons)
    account.suspension_reasons = sorted(set(account.suspension_reasons) - {reason.value})
    if not account.suspension_reasons and account.status == AccountStatus.suspended:
        account.status = AccountStatus.past_due if account.past_due_since else AccountStatus.active
    await audit.record(session, action="admin.account_unsuspended", target_type="account", target_id=account.id,
                       account_id=account.id, before={"reasons": before}, after={"reasons": account.suspension_reasons})
    await _publish_status(session, account)
    request_reconcile(account.id)
    return account


async def force_reconcile(session: AsyncSession, *, account: Account) -> None:
    await audit.record(session, action="admin.reconcile_requested", target_type="account", target_id=account.id,
                       account_id=account.id)
    request_reconcile(account.id)


async def set_billing_mode(
    session: AsyncSession, *, account: Account, billing_mode: BillingMode, card_payments: bool
) -> Account:
    """How the account pays (card, invoice, prepaid, free): an operator's decision, e.g. after a contract is
    signed. It decides which plans it may check out and its dunning grace; current subscriptions stay. `card`
    needs a card payment provider (`card_payments`: Stripe is configured)."""
    if billing_mode == BillingMode.card and not card_payments:
        raise Conflict(
            "Card billing needs Stripe: set JUSHOSTIT_STRIPE_SECRET_KEY first", code="card_payments_not_configured"
        )
    if account.billing_mode != billing_mode:
        before = account.billing_mode
        account.billing_mode = billing_mode
        await audit.record(session, action="admin.billing_mode_changed", target_type="account", target_id=account.id,
                           account_id=account.id, before={"billing_mode": before}, after={"billing_mode": billing_mode})
        request_reconcile(account.id)  # the dunning grace depends on it
    return account


async def set_dunning_policy(
    session: AsyncSession, *, account: Account, overrides: dict[str, Any]
) -> Account:
    """Replace the account's dunning overrides (fields left out follow the billing mode again). A reminder must
    come before the grace ends. The grace decides when the `billing` hold applies: the account is reconciled."""
    # A null `terminate_after` means never; a null grace or reminder list means the default, like leaving it out.
    overrides = {name: value for name, value in overrides.items() if value is not None or name == "terminate_after"}
    values, _ = effective_dunning(account.billing_mode, stored_durations(overrides))
    if any(reminder >= values.grace for reminder in values.reminders):
        raise BadRequest("Every reminder must come before the grace ends", code="invalid_dunning_policy",
                         details={"grace": iso_duration(values.grace)})
    before, after = account.dunning_policy, stored_durations(overrides) or None
    if before != after:
        account.dunning_policy = after
        await audit.record(session, action="admin.dunning_policy_changed", target_type="account",
                           target_id=account.id, account_id=account.id, before={"dunning_policy": before},
                           after={"dunning_policy": after})
        request_reconcile(account.id)
    return account


async def set_contract_end(session: AsyncSession, *, account: Account, ends_at: datetime) -> Account:
    """Move the end of the account's prepaid contract: later when its deal is renewed, sooner to end it. The
    entitlement applies it at once (held for `contract` from the end on); the subscriptions the contract pays that
    lapsed or end within a day are renewed now, so an extension brings a stopped service back at once."""
    if account.contract_ref is None:
        raise Conflict("The account has no prepaid contract", code="no_contract")
    before = account.contract_ends_at
    if before == ends_at:
        return account
    account.contract_ends_at = ends_at
    await audit.record(session, action="admin.contract_end_changed", target_type="account", target_id=account.id,
                       account_id=account.id, before={"contract_ends_at": before.isoformat() if before else None},
                       after={"contract_ref": account.contract_ref, "contract_ends_at": ends_at.isoformat()})
    await session.flush()  # renewing re-reads the account under its lock
    await billing.renew_contract_periods(session, account_id=account.id, now=utcnow())
    request_reconcile(account.id)
    return account


async def suspend_user(session: AsyncSession, *, user: User, note: str | None) -> User:
    """The user can no longer sign in or authenticate; their open event streams end (a database trigger announces
    it). Sessions and API keys are kept: unsuspending restores them. Suspending a suspended user changes nothing."""
    if user.id == context.actor.get().id:
        raise Conflict("Platform admins cannot suspend themselves", code="cannot_suspend_self")
    if user.suspended_at is None:
        user.suspended_at = utcnow()
        await audit.record(session, action="admin.user_suspended", target_type="user", target_id=user.id,
                           before={"suspended": False}, after={"suspended": True, "note": note})
    return user


async def unsuspend_user(session: AsyncSession, *, user: User) -> User:
    if user.suspended_at is None:
        raise Conflict("The user is not suspended", code="not_suspended")
    user.suspended_at = None
    await audit.record(session, action="admin.user_unsuspended", target_type="user", target_id=user.id,
                       before={"suspended": True}, after={"suspended": False})
    return user
