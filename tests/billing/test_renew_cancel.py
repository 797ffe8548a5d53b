"""Renewal (exactly once per Idempotency-Key, compare-and-set on the period) and cancellation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import time_machine
from sqlalchemy import func, select, text

from jushostit.app import create_app
from jushostit.models import Account, AuditEntry, BillingMode, Subscription
from tests.billing.helpers import error_of, login, reconcile_jobs
from tests.conftest import asgi_client

T0 = datetime(2031, 3, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _renewals(session, subscription_id: str) -> int:
    stmt = select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == "subscription.renewed", AuditEntry.target_id == subscription_id
    )
    return int(await session.scalar(stmt) or 0)


async def _stored(session, subscription_id: str) -> Subscription:
    session.expire_all()
    found = await session.get(Subscription, uuid.UUID(subscription_id))
    assert found is not None
    return found


async def _free_subscription(client, who) -> dict:
    response = await client.post(f"/v1/accounts/{who.account_id}/checkout", json={"plan": "free"}, headers=who.headers)
    assert response.status_code == 201, response.text
    return response.json()["subscription"]


async def test_renew_extends_from_the_period_end_exactly_once_per_key(client, session, signup) -> None:
    with time_machine.travel(T0, tick=False):
        owner = await signup()
        sub = await _free_subscription(client, owner)
        other = await _free_subscription(client, await signup())  # another account, for a reused key
    assert _at(sub["current_period_end"]) == T0 + 30 * DAY
    url = f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}/renew"

    with time_machine.travel(T0 + DAY, tick=False):
        headers = await login(client, owner)
        key = {**headers, "Idempotency-Key": "renew-march"}
        first = await client.post(url, headers=key)
        assert first.status_code == 200, first.text
        assert _at(first.json()["current_period_start"]) == T0
        assert _at(first.json()["current_period_end"]) == T0 + 60 * DAY

    with time_machine.travel(T0 + 2 * DAY, tick=False):
        headers = await login(client, owner)
        replay = await client.post(url, headers={**headers, "Idempotency-Key": "renew-march"})
        # The same key and request: the first response, byte for byte, and no second extension.
        assert replay.status_code == 200 and replay.content == first.content
        assert replay.headers["idempotent-replayed"] == "true"
        # The same key for another request (another subscription's path) is a conflict, not a renewal.
        elsewhere = f"/v1/accounts/{owner.account_id}/subscriptions/{other['id']}/renew"
        error_of(await client.post(elsewhere, headers={**headers, "Idempotency-Key": "renew-march"}), 409,
                 "idempotency_key_reused")
        stored = await _stored(session, sub["id"])
        assert stored.current_period_end == T0 + 60 * DAY
        assert await _renewals(session, sub["id"]) == 1

        # A new key is a new renewal.
        second = await client.post(url, headers={**headers, "Idempotency-Key": "renew-april"})
        assert second.status_code == 200 and _at(second.json()["current_period_end"]) == T0 + 90 * DAY
    assert await _renewals(session, sub["id"]) == 2
    assert len(await reconcile_jobs(session, owner.account_id)) >= 1


async def test_renewing_a_lapsed_subscription_starts_a_new_period_now(client, session, signup) -> None:
    with time_machine.travel(T0, tick=False):
        owner = await signup()
        sub = await _free_subscription(client, owner)
    late = T0 + 45 * DAY
    with time_machine.travel(late, tick=False):
        headers = await login(client, owner)
        lapsed = (await client.get(f"/v1/accounts/{owner.account_id}", headers=headers)).json()
        assert lapsed["entitlement"]["level"] == "expired"
        renewed = await client.post(
            f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}/renew", headers=headers
        )
        assert renewed.status_code == 200, renewed.text
        assert _at(renewed.json()["current_period_start"]) == late
        assert _at(renewed.json()["current_period_end"]) == late + 30 * DAY
        back = (await client.get(f"/v1/accounts/{owner.account_id}", headers=headers)).json()
        assert back["entitlement"]["level"] == "running"


async def test_cancel_at_period_end_keeps_it_running_and_cancel_now_ends_it(client, session, signup) -> None:
    with time_machine.travel(T0, tick=False):
        owner = await signup()
        sub = await _free_subscription(client, owner)
        base = f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}"
        scheduled = await client.post(f"{base}/cancel", json={"at": "period_end"}, headers=owner.headers)
        assert scheduled.status_code == 200, scheduled.text
        assert scheduled.json()["status"] == "active" and scheduled.json()["cancel_at_period_end"] is True
        assert scheduled.json()["cancelled_at"] is None
        # Scheduling twice changes nothing (and records nothing more); the default is period_end.
        again = await client.post(f"{base}/cancel", json={}, headers=owner.headers)
        assert again.status_code == 200 and again.json() == scheduled.json()
        shown = (await client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
        assert shown["entitlement"]["level"] == "running"

    with time_machine.travel(T0 + 5 * DAY, tick=False):
        headers = await login(client, owner)
        now = await client.post(f"{base}/cancel", json={"at": "now"}, headers=headers)
        assert now.status_code == 200, now.text
        assert now.json()["status"] == "cancelled" and _at(now.json()["cancelled_at"]) == T0 + 5 * DAY
        shown = (await client.get(f"/v1/accounts/{owner.account_id}", headers=headers)).json()
        assert shown["entitlement"]["level"] == "expired"  # the data is kept, nothing runs
        error_of(await client.post(f"{base}/cancel", json={"at": "now"}, headers=headers), 409,
                 "subscription_cancelled")
        # Renewing a cancelled subscription is refused and changes nothing.
        error_of(await client.post(f"{base}/renew", headers=headers), 409, "subscription_cancelled")
        error_of(await client.post(f"{base}/renew", headers={**headers, "Idempotency-Key": "k1"}), 409)
    stored = await _stored(session, sub["id"])
    assert stored.current_period_end == T0 + 30 * DAY and stored.status == "cancelled"
    assert await _renewals(session, sub["id"]) == 0
    actions = (
        await session.scalars(
            select(AuditEntry.action).where(AuditEntry.target_id == sub["id"]).order_by(AuditEntry.seq)
        )
    ).all()
    assert actions == ["subscription.created", "subscription.cancel_scheduled", "subscription.cancelled"]
    # A refused renewal stored no idempotency key: the same key is free for a real request later.
    count = await session.scalar(text("SELECT count(*) FROM idempotency_keys WHERE key = 'k1'"))
    assert count == 0


async def test_renewing_withdraws_a_scheduled_cancellation(client, signup) -> None:
    owner = await signup()
    sub = await _free_subscription(client, owner)
    base = f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}"
    await client.post(f"{base}/cancel", json={"at": "period_end"}, headers=owner.headers)
    renewed = await client.post(f"{base}/renew", headers=owner.headers)
    assert renewed.status_code == 200 and renewed.json()["cancel_at_period_end"] is False
    assert _at(renewed.json()["current_period_end"]) == _at(sub["current_period_end"]) + 30 * DAY


async def test_cancel_input_is_strict(client, signup) -> None:
    owner = await signup()
    sub = await _free_subscription(client, owner)
    url = f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}/cancel"
    for body in ({"at": "tomorrow"}, {"at": "now", "status": "cancelled"}, {"at": 1}):
        error_of(await client.post(url, json=body, headers=owner.headers), 422, "validation_error")
    listed = (await client.get(f"/v1/accounts/{owner.account_id}/subscriptions", headers=owner.headers)).json()
    assert listed["items"] == [sub]



async def test_a_retired_plan_keeps_its_subscribers(client, session, signup, admin) -> None:
    owner = await signup()
    sub = await _free_subscription(client, owner)
    boss = await admin()
    assert (await client.post("/v1/admin/plans/free/retire", headers=boss.headers)).status_code == 200
    renewed = await client.post(
        f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}/renew", headers=owner.headers
    )
    assert renewed.status_code == 200 and renewed.json()["plan"] == "free"
    shown = (await client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
    assert shown["entitlement"]["level"] == "running" and shown["entitlement"]["quotas"]["max_instances"] == 1
    newcomer = await signup()
    refused = await client.post(
        f"/v1/accounts/{newcomer.account_id}/checkout", json={"plan": "free"}, headers=newcomer.headers
    )
    error_of(refused, 409, "plan_retired")


async def test_a_pending_subscription_cannot_be_renewed_or_scheduled_to_cancel(client, session, signup) -> None:
    owner = await signup()
    account = await session.get(Account, uuid.UUID(owner.account_id))
    account.billing_mode = BillingMode.card
    await session.flush()
    pending = (
        await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "pro"}, headers=owner.headers)
    ).json()["subscription"]
    base = f"/v1/accounts/{owner.account_id}/subscriptions/{pending['id']}"
    error_of(await client.post(f"{base}/renew", headers=owner.headers), 409, "subscription_pending")
    error_of(await client.post(f"{base}/cancel", json={"at": "period_end"}, headers=owner.headers), 409,
             "subscription_pending")
    cancelled = await client.post(f"{base}/cancel", json={"at": "now"}, headers=owner.headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert await _renewals(session, pending["id"]) == 0

# --- real concurrency: a committing app, two requests racing on one subscription ------------------------------


async def _wait_until_blocked(container, count: int) -> None:
    """Until `count` sessions of this database wait on a lock (a condition, polled; not a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + 15
    async with container.database.engine.connect() as probe:
        while True:
            waiting = await probe.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
            )
            await probe.rollback()
            if waiting >= count:
                return
            assert asyncio.get_running_loop().time() < deadline, f"only {waiting} of {count} requests blocked"
            await asyncio.sleep(0.01)


async def _race(settings, container, *, keys: tuple[str, str]) -> tuple[list, dict, str]:
    """Two renewals of one subscription that both reach their decisive statement before either can commit:
    the subscription row is held by another transaction until both are blocked."""
    application = create_app(settings, container)
    async with asgi_client(application) as c:
        email = f"race-{uuid.uuid4().hex[:10]}@example.com"
        signed = await c.post("/v1/auth/signup", json={"email": email, "password": "a sturdy test passphrase",
                                                        "account_name": "Race"})
        assert signed.status_code == 201, signed.text
        account_id = signed.json()["account"]["id"]
        headers = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        sub = (await c.post(f"/v1/accounts/{account_id}/checkout", json={"plan": "free"}, headers=headers)).json()
        sub = sub["subscription"]
        url = f"/v1/accounts/{account_id}/subscriptions/{sub['id']}/renew"
        async with container.database.engine.connect() as holder:
            await holder.execute(text("SELECT 1 FROM subscriptions WHERE id = :id FOR UPDATE"), {"id": sub["id"]})
            tasks = [asyncio.create_task(c.post(url, headers={**headers, "Idempotency-Key": k})) for k in keys]
            await _wait_until_blocked(container, 2)
            await holder.rollback()
        responses = await asyncio.gather(*tasks)
    return responses, sub, account_id


async def _committed_subscription(container, subscription_id: str) -> tuple[datetime, int]:
    async with container.database.sessionmaker() as s:
        stored = await s.get(Subscription, uuid.UUID(subscription_id))
        renewals = await _renewals(s, subscription_id)
        return stored.current_period_end, renewals


async def test_a_concurrent_double_submit_with_one_key_extends_once(settings, container) -> None:
    responses, sub, _ = await _race(settings, container, keys=("double-submit", "double-submit"))
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert responses[0].content == responses[1].content
    assert sorted(r.headers.get("idempotent-replayed", "no") for r in responses) == ["no", "true"]
    end, renewals = await _committed_subscription(container, sub["id"])
    assert end == _at(sub["current_period_end"]) + 30 * DAY and renewals == 1


async def test_two_renewals_racing_for_one_period_cannot_both_apply(settings, container) -> None:
    responses, sub, _ = await _race(settings, container, keys=("first-key", "second-key"))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409], [r.text for r in responses]
    loser = next(r for r in responses if r.status_code == 409)
    error_of(loser, 409, "subscription_changed")
    end, renewals = await _committed_subscription(container, sub["id"])
    assert end == _at(sub["current_period_end"]) + 30 * DAY and renewals == 1


async def test_a_paid_plan_renews_only_when_an_operator_records_the_payment(client, session, signup, admin) -> None:
    operator = await admin()
    owner = await signup()
    account = await session.get(Account, uuid.UUID(owner.account_id))
    account.billing_mode = BillingMode.invoice
    await session.flush()
    pending = (
        await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "pro"}, headers=owner.headers)
    ).json()["subscription"]
    paid = await client.post(f"/v1/admin/subscriptions/{pending['id']}/mark-paid", headers=operator.headers)
    assert paid.status_code == 200 and paid.json()["status"] == "active"
    first_end = paid.json()["current_period_end"]

    own = await client.post(f"/v1/accounts/{owner.account_id}/subscriptions/{pending['id']}/renew", headers=owner.headers)
    error_of(own, 409, "payment_required")
    account.suspension_reasons = ["billing", "admin"]
    await session.flush()
    renewed = await client.post(f"/v1/admin/subscriptions/{pending['id']}/renew", headers=operator.headers)
    assert renewed.status_code == 200 and renewed.json()["current_period_end"] > first_end
    await session.refresh(account)
    assert account.suspension_reasons == ["admin"]  # the payment lifts only `billing`
