"""The credits ledger (issue 9 §9): grants, debits, refunds, plan credits per period and bought packs. Never
commits.

How it holds together:

- **One lock per account.** Every change runs under the account's `credit_balances` row lock
  (`CreditsRepository.lock_balance`), taken after the audit chain's lock: every writer of the audit chain takes
  that one first, and a caller that wrote an audit entry already holds it, so no two transactions ever wait for
  these two locks in opposite orders.
- **Never negative.** A debit passes only through the conditional update `balance = balance - n WHERE
  balance >= n` (`CreditsRepository.take`); CHECK constraints on the balance, every entry's `balance_after` and
  every grant's `remaining` hold it at the database too. A refused debit changes nothing (409
  `insufficient_credits`; the caller's transaction rolls back).
- **The ledger is the record.** Each change of the balance is a new `credit_entries` row (the database refuses
  to update or delete one); a refund is a new grant and a new entry naming the debit, never an edit.
- **Starts and expiries are written when due.** A grant that starts later (a period paid ahead) or that has
  expired is written to the ledger (`grant` / `expiry` entry) by the next change of the account's credits,
  before that change, under the lock — so a debit never burns an expired grant, and the balance row and the
  sum of live grants agree before anything is decided. Reads do not wait for that: the balance shown is summed
  from the live grants at the moment of the read (`CreditsRepository.live_balance`), which is the same number,
  never a polled cache.
- **Idempotent.** A grant or a debit with an idempotency key is stored with it (unique per account, grants and
  entries apart); repeating it answers the first result and changes nothing, and the same key for a different
  request is 409 `idempotency_key_reused`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit
from jushostit.audit.repository import AuditRepository
from jushostit.credits.repository import CreditsRepository
from jushostit.kit.db import utcnow
from jushostit.kit.errors import BadRequest, Conflict, NotFound
from jushostit.models import CreditEntry, CreditGrant, Plan

DEFAULT_PRIORITY = 1  # OpenMeter's default: lower burns first
PLAN_PRIORITY = DEFAULT_PRIORITY


@dataclass(frozen=True)
class CreditChange:
    """What a change wrote: its entry (None for a grant that starts later), the grant it made (None for a
    debit), and the account's live credits after it."""

    entry: CreditEntry | None
    grant: CreditGrant | None
    balance: int


async def _lock(session: AsyncSession, account_id: uuid.UUID, now: datetime) -> CreditsRepository:
    repository = CreditsRepository(session)
    if not await repository.account_exists(account_id):
        raise NotFound("Account not found")
    await AuditRepository(session).lock_chain_head()  # the audit chain's lock first (see the module doc)
    await repository.lock_balance(account_id, now)
    return repository


def _grant_fields(grant: CreditGrant) -> dict[str, Any]:
    return {
        "grant_id": str(grant.id), "source": grant.source, "amount": grant.amount, "priority": grant.priority,
        "effective_at": grant.effective_at.isoformat(),
        "expires_at": grant.expires_at.isoformat() if grant.expires_at else None,
        "reference": grant.reference,
    }


def _entry_fields(entry: CreditEntry) -> dict[str, Any]:
    return {
        "entry_id": str(entry.id), "kind": entry.kind, "delta": entry.delta, "balance_after": entry.balance_after,
        "reason": entry.reason, "reference": entry.reference,
    }


async def _start(repository: CreditsRepository, grant: CreditGrant, now: datetime, kind: str = "grant",
                 refund_of: uuid.UUID | None = None) -> CreditEntry:
    """Write the grant's credits into the balance and the ledger (its start has come)."""
    balance = await repository.give(grant.account_id, grant.amount, now)
    grant.posted_at = now
    entry = CreditEntry(
        account_id=grant.account_id, kind=kind, delta=grant.amount, balance_after=balance, reason=grant.reason,
        reference=grant.reference, grant_id=grant.id, refund_of=refund_of,
        idempotency_key=grant.idempotency_key if kind == "refund" else None,
    )
    await repository.add(entry)
    return entry


async def _settle(session: AsyncSession, repository: CreditsRepository, account_id: uuid.UUID,
                  now: datetime) -> None:
    """Write every due start and expiry of the account's grants to the ledger, in the order they happened (a
    start before an expiry at the same moment). Under the account's lock."""
    events: list[tuple[datetime, int, CreditGrant]] = [
        (g.effective_at, 0, g) for g in await repository.due_to_start(account_id, now)
    ]
    events += [(g.expires_at, 1, g) for g in await repository.due_to_expire(account_id, now) if g.expires_at]
    started, expired = [], []
    for _, kind, grant in sorted(events, key=lambda e: (e[0], e[1], e[2].id)):
        if kind == 0:
            await _start(repository, grant, now)
            started.append(str(grant.id))
            if grant.expires_at is None or grant.expires_at > now:
                continue
        grant.expired_at = now
        left, grant.remaining = grant.remaining, 0
        if left:
            balance = await repository.take(account_id, left, now)
            assert balance is not None, "the balance lost credits its grants still hold"
            await repository.add(CreditEntry(
                account_id=account_id, kind="expiry", delta=-left, balance_after=balance,
                reason="credits expired", reference=grant.reference, grant_id=grant.id,
            ))
            expired.append({"grant_id": str(grant.id), "credits": left})
    if started or expired:
        await session.flush()
        await audit.record(
            session, action="credits.settled", target_type="account", target_id=account_id,
            account_id=account_id, after={"started": started, "expired": expired},
        )


async def _replayed_grant(repository: CreditsRepository, account_id: uuid.UUID, key: str | None,
                          matches: dict[str, Any], now: datetime) -> CreditChange | None:
    if key is None:
        return None
    grant = await repository.grant_by_key(account_id, key)
    if grant is None:
        return None
    if any(getattr(grant, name) != value for name, value in matches.items()):
        raise Conflict("This idempotency key was already used for a different grant", code="idempotency_key_reused")
    entry = await repository.entry_starting(account_id, grant.id)
    return CreditChange(entry, grant, await repository.live_balance(account_id, now))


async def _grant_locked(
    session: AsyncSession,
    repository: CreditsRepository,
    *,
    account_id: uuid.UUID,
    amount: int,
    source: str,
    priority: int,
    effective_at: datetime,
    expires_at: datetime | None,
    reason: str,
    reference: str | None,
    idempotency_key: str | None,
    subscription_id: uuid.UUID | None,
    now: datetime,
) -> CreditChange:
    grant = CreditGrant(
        account_id=account_id, source=source, amount=amount, remaining=amount, priority=priority,
        effective_at=effective_at, expires_at=expires_at, subscription_id=subscription_id, reason=reason,
        reference=reference, idempotency_key=idempotency_key,
    )
    await repository.add(grant)
    entry = await _start(repository, grant, now) if effective_at <= now else None
    await audit.record(
        session, action="credits.granted", target_type="credit_grant", target_id=grant.id, account_id=account_id,
        after={**_grant_fields(grant), **(_entry_fields(entry) if entry else {})},
    )
    return CreditChange(entry, grant, await repository.live_balance(account_id, now))


async def grant(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    amount: int,
    reason: str,
    source: str = "admin",
    priority: int = DEFAULT_PRIORITY,
    expires_at: datetime | None = None,
    reference: str | None = None,
    idempotency_key: str | None = None,
) -> CreditChange:
    """Grant `amount` credits now, burnt after grants of a lower priority number and expiring at `expires_at`
    (never when None)."""
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise BadRequest("expires_at must be in the future", code="expiry_in_past")
    repository = await _lock(session, account_id, now)
    matches = {"amount": amount, "source": source, "priority": priority, "expires_at": expires_at,
               "reference": reference}
    replayed = await _replayed_grant(repository, account_id, idempotency_key, matches, now)
    if replayed is not None:
        return replayed
    await _settle(session, repository, account_id, now)
    return await _grant_locked(
        session, repository, account_id=account_id, amount=amount, source=source, priority=priority,
        effective_at=now, expires_at=expires_at, reason=reason, reference=reference,
        idempotency_key=idempotency_key, subscription_id=None, now=now,
    )


async def grant_pack(
    session: AsyncSession, *, account_id: uuid.UUID, credits: int, payment_reference: str, idempotency_key: str
) -> CreditChange:
    """A bought pack, granted by the path that confirms its payment (never before): no expiry. The payment's
    confirmation may be reported more than once (a webhook and a resync); the key makes it once."""
    return await grant(
        session, account_id=account_id, amount=credits, reason="credit pack bought", source="pack",
        reference=payment_reference, idempotency_key=idempotency_key,
    )


async def debit(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    amount: int,
    reason: str,
    reference: str | None = None,
    idempotency_key: str | None = None,
) -> CreditChange:
    """Take `amount` credits, burning live grants by priority, then soonest expiry, then oldest. More than the
    balance is refused (409 `insufficient_credits`) and changes nothing."""
    now = utcnow()
    repository = await _lock(session, account_id, now)
    if idempotency_key is not None:
        first = await repository.entry_by_key(account_id, idempotency_key)
        if first is not None:
            if first.kind != "debit" or first.delta != -amount or first.reference != reference:
                raise Conflict("This idempotency key was already used for a different debit",
                               code="idempotency_key_reused")
            return CreditChange(first, None, await repository.live_balance(account_id, now))
    await _settle(session, repository, account_id, now)
    balance = await repository.take(account_id, amount, now)
    if balance is None:
        available = await repository.live_balance(account_id, now)
        raise Conflict(
            f"The account has {available} credits; {amount} were asked for", code="insufficient_credits",
            details={"balance": available, "requested": amount},
        )
    allocations, left = [], amount
    for lot in await repository.burnable(account_id, now):
        burnt = min(lot.remaining, left)
        lot.remaining -= burnt
        allocations.append({"grant_id": str(lot.id), "amount": burnt})
        left -= burnt
        if not left:
            break
    assert left == 0, "the balance holds credits no live grant has"
    entry = CreditEntry(
        account_id=account_id, kind="debit", delta=-amount, balance_after=balance, reason=reason,
        reference=reference, idempotency_key=idempotency_key, allocations=allocations,
    )
    await repository.add(entry)
    await audit.record(
        session, action="credits.debited", target_type="credit_entry", target_id=entry.id, account_id=account_id,
        after={**_entry_fields(entry), "allocations": allocations},
    )
    return CreditChange(entry, None, balance)


async def refund(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    entry_id: uuid.UUID,
    amount: int | None,
    reason: str,
    idempotency_key: str | None = None,
) -> CreditChange:
    """Give back (part of) a debit: a new grant (source `refund`, no expiry) and a new `refund` entry naming
    the debit. The debit is never edited; all refunds of it together never exceed it."""
    now = utcnow()
    repository = await _lock(session, account_id, now)
    original = await repository.entry_of(account_id, entry_id)
    if original is None:
        raise NotFound("Ledger entry not found", code="entry_not_found")
    if original.kind != "debit":
        raise Conflict("Only a debit can be refunded", code="not_a_debit")
    refundable = -original.delta - await repository.refunded(account_id, original.id)
    matches: dict[str, Any] = {"source": "refund", "reference": str(original.id)}
    if amount is not None:
        matches["amount"] = amount
    replayed = await _replayed_grant(repository, account_id, idempotency_key, matches, now)
    if replayed is not None:
        return replayed
    amount = refundable if amount is None else amount
    if amount <= 0 or amount > refundable:
        raise Conflict(
            f"At most {refundable} credits of this debit can still be refunded", code="refund_exceeds_debit",
            details={"refundable": refundable, "requested": amount},
        )
    await _settle(session, repository, account_id, now)
    lot = CreditGrant(
        account_id=account_id, source="refund", amount=amount, remaining=amount, priority=DEFAULT_PRIORITY,
        effective_at=now, expires_at=None, reason=reason, reference=str(original.id),
        idempotency_key=idempotency_key,
    )
    await repository.add(lot)
    entry = await _start(repository, lot, now, kind="refund", refund_of=original.id)
    await audit.record(
        session, action="credits.refunded", target_type="credit_entry", target_id=entry.id, account_id=account_id,
        after={**_entry_fields(entry), "refund_of": str(original.id), "grant_id": str(lot.id)},
    )
    return CreditChange(entry, lot, await repository.live_balance(account_id, now))


async def grant_period_credits(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    subscription_id: uuid.UUID,
    plan: Plan,
    period_start: datetime,
    period_end: datetime,
) -> CreditChange | None:
    """The plan's included credits for the period paid from `period_start` (the payment's period: it may start
    later, when paid ahead) to `period_end`, once per (subscription, period_start) however often it is reported.

    - **reset** (`credits_rollover` false): the period's credits start at `period_start` and expire at
      `period_end`; the previous period's expire at their own end, which is this period's start.
    - **rollover**: besides, what is left of the previous period's plan credits when the renewal is paid, at
      most `credits_rollover_cap` (no cap: all), moves into a grant expiring at `period_end` (a `rollover`
      entry; the balance does not change). The rest stays where it was and expires at its own end; both burn
      in expiry order, so what is carried is exactly what would be left at the period boundary, up to the cap.

    Nothing is written for a plan without included credits or rollover."""
    if plan.included_credits <= 0 and not plan.credits_rollover:
        return None
    now = utcnow()
    period_key = f"plan:{subscription_id}:{period_start.isoformat()}"
    rollover_key = f"rollover:{subscription_id}:{period_start.isoformat()}"
    repository = await _lock(session, account_id, now)
    if await repository.grant_by_key(account_id, period_key) or await repository.entry_by_key(account_id,
                                                                                            rollover_key):
        return None  # this period's credits were granted already
    await _settle(session, repository, account_id, now)
    carried: list[dict[str, Any]] = []
    if plan.credits_rollover and period_end > now:
        lots = await repository.plan_credits_left(account_id, subscription_id, ending_by=period_start, now=now)
        cap = plan.credits_rollover_cap
        wanted = sum(lot.remaining for lot in lots) if cap is None else min(cap, sum(lot.remaining for lot in lots))
        left = wanted
        for lot in lots:
            moved = min(lot.remaining, left)
            if moved:
                lot.remaining -= moved
                carried.append({"grant_id": str(lot.id), "amount": moved})
                left -= moved
        if wanted:
            carry = CreditGrant(
                account_id=account_id, source="rollover", amount=wanted, remaining=wanted, priority=PLAN_PRIORITY,
                effective_at=now, expires_at=period_end, subscription_id=subscription_id,
                reason=f"{plan.code} credits carried over", reference=str(subscription_id),
                idempotency_key=rollover_key, posted_at=now,
            )
            await repository.add(carry)
            balance = await repository.balance(account_id)
            await repository.add(CreditEntry(
                account_id=account_id, kind="rollover", delta=0, balance_after=balance, reason=carry.reason,
                reference=carry.reference, grant_id=carry.id, allocations=carried, idempotency_key=rollover_key,
            ))
    change = None
    if plan.included_credits > 0:
        change = await _grant_locked(
            session, repository, account_id=account_id, amount=plan.included_credits, source="plan",
            priority=PLAN_PRIORITY, effective_at=period_start, expires_at=period_end,
            reason=f"{plan.code} credits for the period", reference=str(subscription_id),
            idempotency_key=period_key, subscription_id=subscription_id, now=now,
        )
    if not carried and change is None:
        return None
    await audit.record(
        session, action="credits.period_granted", target_type="subscription", target_id=subscription_id,
        account_id=account_id,
        after={"plan": plan.code, "period_start": period_start.isoformat(), "period_end": period_end.isoformat(),
               "included": plan.included_credits, "rollover": plan.credits_rollover,
               "carried": sum(c["amount"] for c in carried), "carried_from": carried},
    )
    return change


async def credits_view(
    session: AsyncSession, account_id: uuid.UUID
) -> tuple[int, list[CreditGrant], list[CreditGrant]]:
    """The balance now, the live grants in burn order and the grants that start later — one read, no lock."""
    now = utcnow()
    repository = CreditsRepository(session)
    return (
        await repository.live_balance(account_id, now),
        await repository.burnable(account_id, now),
        await repository.upcoming(account_id, now),
    )
