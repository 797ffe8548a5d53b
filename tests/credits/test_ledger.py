"""The credits ledger's rules (issue 9 §9), on the service and the real database: burn-down order, expiry,
overdraft refused, idempotent repeats, refunds as new entries, append-only at the database, packs once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from jushostit.credits import service as credits
from jushostit.credits.repository import CreditsRepository
from jushostit.kit.errors import BadRequest, Conflict, NotFound
from jushostit.models import Account, CreditBalance, CreditEntry, CreditGrant
from tests.credits.helpers import assert_ledger_agrees, audit_actions, entries_of, grant_row, new_account

T0 = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


async def test_debits_burn_by_priority_then_soonest_expiry_then_oldest(session) -> None:
    account = await new_account(session)
    lots = {}
    with time_machine.travel(T0, tick=False):
        lots["low_priority"] = await credits.grant(session, account_id=account, amount=10, reason="p5", priority=5)
        lots["no_expiry"] = await credits.grant(session, account_id=account, amount=10, reason="never")
        lots["expires_10d"] = await credits.grant(session, account_id=account, amount=10, reason="10d",
                                                  expires_at=T0 + 10 * DAY)
        lots["expires_5d_older"] = await credits.grant(session, account_id=account, amount=10, reason="5d a",
                                                       expires_at=T0 + 5 * DAY)
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        lots["expires_5d_newer"] = await credits.grant(session, account_id=account, amount=10, reason="5d b",
                                                       expires_at=T0 + 5 * DAY)
        debit = await credits.debit(session, account_id=account, amount=45, reason="usage")
        ids = {name: change.grant.id for name, change in lots.items() if change.grant}
        expected = ["expires_5d_older", "expires_5d_newer", "expires_10d", "no_expiry", "low_priority"]
        assert debit.entry is not None
        assert debit.entry.allocations == [
            {"grant_id": str(ids[name]), "amount": 5 if name == "low_priority" else 10} for name in expected
        ]
        assert (debit.entry.delta, debit.entry.balance_after, debit.balance) == (-45, 5, 5)
        assert (await grant_row(session, ids["low_priority"])).remaining == 5
        await assert_ledger_agrees(session, account, 5)


async def test_an_expired_grant_is_never_burnt_and_leaves_the_balance_shown_at_once(session) -> None:
    account = await new_account(session)
    with time_machine.travel(T0, tick=False):
        soon = await credits.grant(session, account_id=account, amount=30, reason="trial", expires_at=T0 + DAY)
        await credits.grant(session, account_id=account, amount=5, reason="kept")
    with time_machine.travel(T0 + 2 * DAY, tick=False):
        # Shown without the expired credits before anything is written...
        balance, live, _ = await credits.credits_view(session, account)
        assert balance == 5 and [g.reason for g in live] == ["kept"]
        # ...and a debit cannot reach them.
        with pytest.raises(Conflict) as refused:
            async with session.begin_nested():
                await credits.debit(session, account_id=account, amount=6, reason="too much")
        assert refused.value.code == "insufficient_credits"
        assert refused.value.details == {"balance": 5, "requested": 6}
        paid = await credits.debit(session, account_id=account, amount=5, reason="usage")
        assert paid.entry and paid.entry.allocations == [{"grant_id": str(live[0].id), "amount": 5}]
        await assert_ledger_agrees(session, account, 0)
    # The expiry is its own entry (written under the lock before the debit), the grant is not edited otherwise.
    kinds = [(e.kind, e.delta, e.balance_after) for e in await entries_of(session, account)]
    assert kinds == [("grant", 30, 30), ("grant", 5, 35), ("expiry", -30, 5), ("debit", -5, 0)]
    expired = await grant_row(session, soon.grant.id)
    assert (expired.remaining, expired.amount, expired.expired_at) == (0, 30, T0 + 2 * DAY)
    assert "credits.settled" in await audit_actions(session, account)


async def test_a_debit_over_the_balance_is_refused_and_changes_nothing(session) -> None:
    account = await new_account(session)
    await credits.grant(session, account_id=account, amount=3, reason="some")
    before = [(e.id, e.balance_after) for e in await entries_of(session, account)]
    with pytest.raises(Conflict) as refused:
        async with session.begin_nested():
            await credits.debit(session, account_id=account, amount=4, reason="too much")
    assert refused.value.code == "insufficient_credits"
    assert [(e.id, e.balance_after) for e in await entries_of(session, account)] == before
    await assert_ledger_agrees(session, account, 3)


async def test_the_database_refuses_a_negative_balance_even_without_the_service(session) -> None:
    account = await new_account(session)
    await credits.grant(session, account_id=account, amount=3, reason="some")
    for statement in (
        update(CreditBalance).where(CreditBalance.account_id == account).values(balance=-1),
        update(CreditGrant).where(CreditGrant.account_id == account).values(remaining=-1),
        update(CreditGrant).where(CreditGrant.account_id == account).values(remaining=4),  # above its amount
    ):
        with pytest.raises(DBAPIError, match="violates check constraint"):
            async with session.begin_nested():
                await session.execute(statement)
    # The conditional update is the gate: it takes nothing when the balance is short.
    assert await CreditsRepository(session).take(account, 4, T0) is None
    await assert_ledger_agrees(session, account, 3)


async def test_a_repeated_key_answers_the_first_result_and_changes_nothing(session) -> None:
    account = await new_account(session)
    first = await credits.grant(session, account_id=account, amount=50, reason="welcome", idempotency_key="g-1")
    again = await credits.grant(session, account_id=account, amount=50, reason="welcome", idempotency_key="g-1")
    assert again.grant and first.grant and again.grant.id == first.grant.id
    assert again.entry and first.entry and again.entry.id == first.entry.id
    debit = await credits.debit(session, account_id=account, amount=20, reason="use", idempotency_key="d-1")
    repeat = await credits.debit(session, account_id=account, amount=20, reason="use", idempotency_key="d-1")
    assert repeat.entry and debit.entry and repeat.entry.id == debit.entry.id
    assert len(await entries_of(session, account)) == 2
    await assert_ledger_agrees(session, account, 30)
    # The same key for another request is refused, not run.
    for attempt in (
        credits.debit(session, account_id=account, amount=21, reason="use", idempotency_key="d-1"),
        credits.grant(session, account_id=account, amount=51, reason="welcome", idempotency_key="g-1"),
    ):
        with pytest.raises(Conflict) as reused:
            async with session.begin_nested():
                await attempt
        assert reused.value.code == "idempotency_key_reused"
    await assert_ledger_agrees(session, account, 30)


async def test_a_refund_is_a_new_grant_and_entry_and_the_debit_is_never_edited(session) -> None:
    account = await new_account(session)
    await credits.grant(session, account_id=account, amount=40, reason="topup")
    debit = await credits.debit(session, account_id=account, amount=25, reason="usage", reference="job-7")
    assert debit.entry is not None
    refund = await credits.refund(session, account_id=account, entry_id=debit.entry.id, amount=10,
                                  reason="failed job", idempotency_key="r-1")
    assert refund.entry and refund.grant
    assert (refund.entry.kind, refund.entry.delta, refund.entry.refund_of) == ("refund", 10, debit.entry.id)
    assert (refund.grant.source, refund.grant.amount, refund.grant.expires_at) == ("refund", 10, None)
    assert refund.grant.reference == str(debit.entry.id)
    # The rest of the debit (15) can be refunded, not more; a repeat of the first refund changes nothing.
    repeat = await credits.refund(session, account_id=account, entry_id=debit.entry.id, amount=10,
                                  reason="failed job", idempotency_key="r-1")
    assert repeat.entry and repeat.entry.id == refund.entry.id
    with pytest.raises(Conflict) as exceeded:
        async with session.begin_nested():
            await credits.refund(session, account_id=account, entry_id=debit.entry.id, amount=16, reason="x")
    assert exceeded.value.code == "refund_exceeds_debit" and exceeded.value.details["refundable"] == 15
    rest = await credits.refund(session, account_id=account, entry_id=debit.entry.id, amount=None, reason="rest")
    assert rest.entry and rest.entry.delta == 15
    with pytest.raises(Conflict) as not_debit:
        async with session.begin_nested():
            await credits.refund(session, account_id=account, entry_id=refund.entry.id, amount=None, reason="x")
    assert not_debit.value.code == "not_a_debit"
    stored = (await entries_of(session, account))[1]
    assert (stored.id, stored.kind, stored.delta, stored.balance_after) == (debit.entry.id, "debit", -25, 15)
    await assert_ledger_agrees(session, account, 40)
    actions = await audit_actions(session, account)
    assert actions.count("credits.refunded") == 2 and actions.count("credits.debited") == 1


async def test_a_refund_of_another_accounts_entry_is_not_found(session) -> None:
    mine, theirs = await new_account(session), await new_account(session, "Other")
    await credits.grant(session, account_id=theirs, amount=5, reason="x")
    debit = await credits.debit(session, account_id=theirs, amount=5, reason="x")
    assert debit.entry is not None
    with pytest.raises(NotFound):
        await credits.refund(session, account_id=mine, entry_id=debit.entry.id, amount=None, reason="x")


async def test_the_ledger_is_append_only_at_the_database(session) -> None:
    account = await new_account(session)
    await credits.grant(session, account_id=account, amount=5, reason="x")
    for statement in (
        update(CreditEntry).where(CreditEntry.account_id == account).values(delta=500, balance_after=500),
        update(CreditEntry).where(CreditEntry.account_id == account).values(reason="rewritten"),
        delete(CreditEntry).where(CreditEntry.account_id == account),
        text("TRUNCATE credit_entries CASCADE"),
    ):
        with pytest.raises(DBAPIError, match="credit_entries is append-only"):
            async with session.begin_nested():
                await session.execute(statement)
    [entry] = await entries_of(session, account)
    assert (entry.delta, entry.reason) == (5, "x")
    # The ledger goes only with its account.
    await session.execute(delete(Account).where(Account.id == account))
    session.expire_all()
    left = await session.scalars(select(CreditEntry.id).where(CreditEntry.account_id == account))
    assert left.all() == []


async def test_a_pack_is_granted_once_per_confirmed_payment(session) -> None:
    account = await new_account(session)
    first = await credits.grant_pack(session, account_id=account, credits=500, payment_reference="pi_123",
                                     idempotency_key="pack:pi_123")
    # The confirmation reported again (a webhook redelivered, a resync) grants nothing more.
    again = await credits.grant_pack(session, account_id=account, credits=500, payment_reference="pi_123",
                                     idempotency_key="pack:pi_123")
    assert first.grant and again.grant and first.grant.id == again.grant.id
    assert (first.grant.source, first.grant.reference, first.grant.expires_at) == ("pack", "pi_123", None)
    await assert_ledger_agrees(session, account, 500)
    assert (await audit_actions(session, account)).count("credits.granted") == 1


async def test_a_grant_expiring_in_the_past_or_for_no_account_is_refused(session) -> None:
    account = await new_account(session)
    with time_machine.travel(T0, tick=False), pytest.raises(BadRequest) as past:
        await credits.grant(session, account_id=account, amount=5, reason="x", expires_at=T0)
    assert past.value.code == "expiry_in_past"
    with pytest.raises(NotFound):
        await credits.debit(session, account_id=uuid.uuid4(), amount=1, reason="x")
