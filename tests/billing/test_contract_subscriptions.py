"""What a prepaid contract pays: a plan checked out while it runs is active at once (provider `contract`, no
payment to wait for), each period is renewed a day before it ends while the contract covers the next period's
start, and an operator moves the contract's end (`PUT /v1/admin/accounts/{id}/contract`), which renews at once
what had lapsed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import time_machine
from sqlalchemy import func, select

from jushostit.billing import service
from jushostit.billing.periods import add_months
from jushostit.billing.repository import BillingRepository
from jushostit.kit.db import unit_of_work
from jushostit.models import Account, AuditEntry, BillingMode, Subscription
from tests.billing.helpers import error_of, login, payments_of, reconcile_jobs, stored_subscription

DEAL = "31337001"


async def _contract_account(session, who, ends_at: datetime, deal: str = DEAL) -> Account:
    """The account as a corporate sign-up leaves it: prepaid by the deal until `ends_at`."""
    account = await session.get(Account, uuid.UUID(who.account_id))
    assert account is not None
    account.billing_mode, account.contract_ref, account.contract_ends_at = BillingMode.prepaid, deal, ends_at
    await session.flush()
    return account


async def _checkout(client, who, plan: str = "starter") -> dict:
    response = await client.post(f"/v1/accounts/{who.account_id}/checkout", json={"plan": plan}, headers=who.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def _renew(session, who, now: datetime) -> int:
    """As the hourly job runs it for the account: in a unit of work (its reconcile queued after the commit)."""
    session.expire_all()
    async with unit_of_work(session):
        return await service.renew_contract_periods(session, account_id=uuid.UUID(who.account_id), now=now)


async def test_a_plan_checked_out_under_a_running_contract_is_active_at_once_paid_by_it(client, session, signup) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with time_machine.travel(now, tick=False):
        owner = await signup()
        await _contract_account(session, owner, now + timedelta(days=365))
        body = await _checkout(client, owner)
        shown = (await client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
    subscription = body["subscription"]
    assert body["checkout_url"] is None
    assert (subscription["status"], subscription["provider"]) == ("active", "contract")
    assert (subscription["current_period_start"], subscription["current_period_end"]) == (
        now.isoformat().replace("+00:00", "Z"), add_months(now, 1).isoformat().replace("+00:00", "Z"))
    assert await payments_of(session, subscription["id"]) == []  # no money changed hands here
    assert shown["entitlement"]["level"] == "running" and shown["entitlement"]["quotas"]["max_instances"] == 3
    assert shown["billing"]["contract_ref"] == DEAL
    assert shown["billing"]["contract_ends_at"] == (now + timedelta(days=365)).isoformat().replace("+00:00", "Z")
    created = await session.scalar(select(AuditEntry).where(AuditEntry.action == "subscription.created",
                                                            AuditEntry.target_id == subscription["id"]))
    assert created is not None and created.after["provider"] == "contract"
    assert len(await reconcile_jobs(session, owner.account_id)) == 1


async def test_a_checkout_once_the_contract_ended_is_refused_and_creates_nothing(client, session, signup) -> None:
    owner = await signup()
    ended = datetime.now(UTC) - timedelta(minutes=1)
    await _contract_account(session, owner, ended)
    response = await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "starter"},
                                 headers=owner.headers)
    error = error_of(response, 409, "contract_ended")
    assert error["details"] == {"contract_ends_at": ended.isoformat()}
    count = select(func.count()).select_from(Subscription).where(Subscription.account_id == uuid.UUID(owner.account_id))
    assert await session.scalar(count) == 0


async def test_the_contract_renews_each_period_a_day_before_it_ends_while_it_covers_the_next_one(
    client, session, signup
) -> None:
    start = datetime.now(UTC).replace(microsecond=0)
    with time_machine.travel(start, tick=False):
        owner = await signup()
        first_end = add_months(start, 1)
        # The contract ends ten days into the second period: it pays that one, not the third.
        await _contract_account(session, owner, first_end + timedelta(days=10))
        subscription = (await _checkout(client, owner))["subscription"]

    assert await _renew(session, owner, first_end - timedelta(days=2)) == 0  # not yet due
    assert await _renew(session, owner, first_end - timedelta(hours=12)) == 1
    assert await _renew(session, owner, first_end - timedelta(hours=11)) == 0  # that period is renewed already
    renewed = await stored_subscription(session, subscription["id"])
    second_end = add_months(start, 2)
    assert (renewed.current_period_start, renewed.current_period_end) == (start, second_end)
    [claim] = await payments_of(session, subscription["id"])
    assert (claim.period_start, claim.period_end, claim.amount_minor) == (first_end, second_end, 0)
    assert (claim.source, claim.external_reference, claim.provider) == ("contract", DEAL, "contract")
    audited = await session.scalar(select(AuditEntry).where(AuditEntry.action == "subscription.renewed",
                                                            AuditEntry.target_id == subscription["id"]))
    assert audited is not None and audited.after["payment"]["source"] == "contract"

    # The contract ends before the third period starts: the second is the last it pays.
    assert await _renew(session, owner, second_end - timedelta(hours=12)) == 0
    assert (await stored_subscription(session, subscription["id"])).current_period_end == second_end


async def test_a_subscription_cancelling_at_its_period_end_is_left_to_end(client, session, signup) -> None:
    start = datetime.now(UTC).replace(microsecond=0)
    with time_machine.travel(start, tick=False):
        owner = await signup()
        await _contract_account(session, owner, start + timedelta(days=365))
        subscription = (await _checkout(client, owner))["subscription"]
        cancelled = await client.post(f"/v1/accounts/{owner.account_id}/subscriptions/{subscription['id']}/cancel",
                                      json={"at": "period_end"}, headers=owner.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert await _renew(session, owner, add_months(start, 1) - timedelta(hours=12)) == 0


async def test_the_sweep_finds_the_accounts_whose_contract_pays_a_period_due(client, session, signup) -> None:
    start = datetime.now(UTC).replace(microsecond=0)
    with time_machine.travel(start, tick=False):
        covered, uncovered = await signup(), await signup()
        await _contract_account(session, covered, start + timedelta(days=365))
        await _checkout(client, covered)
        # This one ends before the period does: it pays no next period.
        await _contract_account(session, uncovered, start + timedelta(days=20), deal="31337002")
        await _checkout(client, uncovered)
    now = add_months(start, 1) - timedelta(hours=12)
    due = await BillingRepository(session).accounts_with_contract_periods_due(
        service.CONTRACT_PROVIDER, now=start, horizon=now + service.CONTRACT_RENEWAL_LEAD)
    assert uuid.UUID(covered.account_id) in due and uuid.UUID(uncovered.account_id) not in due
    not_yet = await BillingRepository(session).accounts_with_contract_periods_due(
        service.CONTRACT_PROVIDER, now=start, horizon=start + service.CONTRACT_RENEWAL_LEAD)
    assert uuid.UUID(covered.account_id) not in not_yet


async def test_an_operator_extends_the_contract_and_a_lapsed_subscription_renews_at_once(
    client, session, signup, admin
) -> None:
    start = datetime.now(UTC).replace(microsecond=0)
    with time_machine.travel(start, tick=False):
        owner, boss = await signup(), await admin()
        ends = start + timedelta(days=20)
        await _contract_account(session, owner, ends)
        subscription = (await _checkout(client, owner))["subscription"]
    later = add_months(start, 1) + timedelta(days=3)  # the contract ended, then the period lapsed
    with time_machine.travel(later, tick=False):
        headers = await login(client, owner)
        held = (await client.get(f"/v1/accounts/{owner.account_id}", headers=headers)).json()
        new_end = later + timedelta(days=365)
        response = await client.put(f"/v1/admin/accounts/{owner.account_id}/contract",
                                    json={"ends_at": new_end.isoformat()}, headers=await login(client, boss))
        shown = (await client.get(f"/v1/accounts/{owner.account_id}", headers=headers)).json()
    assert held["entitlement"]["holds"] == ["contract"] and held["status"] == "suspended"
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["contract_ref"] == DEAL and body["holds"] == [] and body["status"] == "active"
    assert body["contract_ends_at"] == new_end.isoformat().replace("+00:00", "Z")
    renewed = await stored_subscription(session, subscription["id"])
    assert (renewed.current_period_start, renewed.current_period_end) == (later, add_months(later, 1))
    assert shown["entitlement"]["level"] == "running" and shown["entitlement"]["holds"] == []
    changed = await session.scalar(select(AuditEntry).where(AuditEntry.action == "admin.contract_end_changed",
                                                            AuditEntry.target_id == owner.account_id))
    assert changed is not None and changed.actor_id == uuid.UUID(boss.user_id)
    assert changed.before == {"contract_ends_at": ends.isoformat()}
    assert changed.after == {"contract_ref": DEAL, "contract_ends_at": new_end.isoformat()}
    assert any(args == {"account_id": owner.account_id} for _, args, *_ in await reconcile_jobs(session, owner.account_id))


async def test_an_account_without_a_contract_has_no_end_to_set(client, signup, admin) -> None:
    owner, boss = await signup(), await admin()
    response = await client.put(f"/v1/admin/accounts/{owner.account_id}/contract",
                                json={"ends_at": "2031-01-01T00:00:00Z"}, headers=boss.headers)
    error_of(response, 409, "no_contract")
    refused = await client.put(f"/v1/admin/accounts/{owner.account_id}/contract",
                               json={"ends_at": "2031-01-01T00:00:00Z"}, headers=owner.headers)
    error_of(refused, 403)
