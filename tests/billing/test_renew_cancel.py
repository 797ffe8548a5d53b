"""Renewal (exactly once per Idempotency-Key and per period, compare-and-set on the period) and cancellation.
The rules of renewing once per period are in test_renewal_once_per_period.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import time_machine
from sqlalchemy import select, text

from jushostit.app import create_app
from jushostit.models import Account, AuditEntry, BillingMode
from tests.billing.helpers import (
    at,
    error_of,
    free_subscription,
    login,
    paid_subscription,
    payments_of,
    reconcile_jobs,
    renewal_count,
    stored_subscription,
    wait_until_blocked,
)
from tests.conftest import TEST_PASSWORD, asgi_client, committed_email_reader, sign_up

T0 = datetime(2031, 3, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
IN_THE_WINDOW = 28 * DAY  # a free plan's period is 30 days; it renews in its last 3


async def test_renew_extends_from_the_period_end_exactly_once_per_key(client, session, signup) -> None:
    with time_machine.travel(T0, tick=False):
        owner = await signup()
        sub = await free_subscription(client, owner)
        other = await free_subscription(client, await signup())  # another account, for a reused key
    assert at(sub["current_period_end"]) == T0 + 30 * DAY
    url = f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}/renew"

    with time_machine.travel(T0 + IN_THE_WINDOW, tick=False):
        headers = await login(client, owner)
        key = {**headers, "Idempotency-Key": "renew-march"}
        first = await client.post(url, headers=key)
        assert first.status_code == 200, first.text
        assert at(first.json()["current_period_start"]) == T0
        assert at(first.json()["current_period_end"]) == T0 + 60 * DAY

    with time_machine.travel(T0 + IN_THE_WINDOW + DAY, tick=False):
        headers = await login(client, owner)
        replay = await client.post(url, headers={**headers, "Idempotency-Key": "renew-march"})
        # The same key and request: the first response, byte for byte, and no second extension.
        assert replay.status_code == 200 and replay.content == first.content
        assert replay.headers["idempotent-replayed"] == "true"
        # The same key for another request (another subscription's path) is a conflict, not a renewal.
        elsewhere = f"/v1/accounts/{owner.account_id}/subscriptions/{other['id']}/renew"
        error_of(await client.post(elsewhere, headers={**headers, "Idempotency-Key": "renew-march"}), 409,
                 "idempotency_key_reused")
        stored = await stored_subscription(session, sub["id"])
        assert stored.current_period_end == T0 + 60 * DAY
        assert await renewal_count(session, sub["id"]) == 1

    # A new key is a new renewal: of the next period, once that one is in its last days.
    with time_machine.travel(T0 + 30 * DAY + IN_THE_WINDOW, tick=False):
        headers = await login(client, owner)
        second = await client.post(url, headers={**headers, "Idempotency-Key": "renew-april"})
        assert second.status_code == 200 and at(second.json()["current_period_end"]) == T0 + 90 * DAY
    assert await renewal_count(session, sub["id"]) == 2
    assert len(await reconcile_jobs(session, owner.account_id)) >= 1


async def test_renewing_a_lapsed_subscription_starts_a_new_period_now(client, session, signup) -> None:
    with time_machine.travel(T0, tick=False):
        owner = await signup()
        sub = await free_subscription(client, owner)
    late = T0 + 45 * DAY
    with time_machine.travel(late, tick=False):
        headers = await login(client, owner)
        lapsed = (await client.get(f"/v1/accounts/{owner.account_id}", headers=headers)).json()
        assert lapsed["entitlement"]["level"] == "expired"
        renewed = await client.post(
            f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}/renew", headers=headers
        )
        assert renewed.status_code == 200, renewed.text
        assert at(renewed.json()["current_period_start"]) == late
        assert at(renewed.json()["current_period_end"]) == late + 30 * DAY
        back = (await client.get(f"/v1/accounts/{owner.account_id}", headers=headers)).json()
        assert back["entitlement"]["level"] == "running"


async def test_cancel_at_period_end_keeps_it_running_and_cancel_now_ends_it(client, session, signup) -> None:
    with time_machine.travel(T0, tick=False):
        owner = await signup()
        sub = await free_subscription(client, owner)
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
        assert now.json()["status"] == "cancelled" and at(now.json()["cancelled_at"]) == T0 + 5 * DAY
        shown = (await client.get(f"/v1/accounts/{owner.account_id}", headers=headers)).json()
        assert shown["entitlement"]["level"] == "expired"  # the data is kept, nothing runs
        error_of(await client.post(f"{base}/cancel", json={"at": "now"}, headers=headers), 409,
                 "subscription_cancelled")
        # Renewing a cancelled subscription is refused and changes nothing.
        error_of(await client.post(f"{base}/renew", headers=headers), 409, "subscription_cancelled")
        error_of(await client.post(f"{base}/renew", headers={**headers, "Idempotency-Key": "k1"}), 409)
    stored = await stored_subscription(session, sub["id"])
    assert stored.current_period_end == T0 + 30 * DAY and stored.status == "cancelled"
    assert await renewal_count(session, sub["id"]) == 0
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
    with time_machine.travel(T0, tick=False):
        owner = await signup()
        sub = await free_subscription(client, owner)
        base = f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}"
        await client.post(f"{base}/cancel", json={"at": "period_end"}, headers=owner.headers)
    with time_machine.travel(T0 + IN_THE_WINDOW, tick=False):
        renewed = await client.post(f"{base}/renew", headers=await login(client, owner))
    assert renewed.status_code == 200 and renewed.json()["cancel_at_period_end"] is False
    assert at(renewed.json()["current_period_end"]) == at(sub["current_period_end"]) + 30 * DAY


async def test_cancel_input_is_strict(client, signup) -> None:
    owner = await signup()
    sub = await free_subscription(client, owner)
    url = f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}/cancel"
    for body in ({"at": "tomorrow"}, {"at": "now", "status": "cancelled"}, {"at": 1}):
        error_of(await client.post(url, json=body, headers=owner.headers), 422, "validation_error")
    listed = (await client.get(f"/v1/accounts/{owner.account_id}/subscriptions", headers=owner.headers)).json()
    assert listed["items"] == [sub]



async def test_a_retired_plan_keeps_its_subscribers(client, session, signup, admin) -> None:
    with time_machine.travel(T0, tick=False):
        owner = await signup()
        sub = await free_subscription(client, owner)
        boss = await admin()
        assert (await client.post("/v1/admin/plans/free/retire", headers=boss.headers)).status_code == 200
    with time_machine.travel(T0 + IN_THE_WINDOW, tick=False):
        headers = await login(client, owner)
        renewed = await client.post(f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}/renew", headers=headers)
        assert renewed.status_code == 200 and renewed.json()["plan"] == "free"
        shown = (await client.get(f"/v1/accounts/{owner.account_id}", headers=headers)).json()
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
    assert await renewal_count(session, pending["id"]) == 0


# --- real concurrency: a committing app, two requests racing on one subscription ------------------------------


async def _race(settings, container, *, keys: tuple[str, str]) -> tuple[list, dict]:
    """Two renewals of one subscription that both reach their decisive statement before either can commit:
    the subscription row is held by another transaction until both are blocked."""
    application = create_app(settings, container)
    async with asgi_client(application) as c:
        email = f"race-{uuid.uuid4().hex[:10]}@example.com"
        with time_machine.travel(T0, tick=False):
            signed = await sign_up(c, committed_email_reader(container), email, "Race")
            account_id = signed.account_id
            headers = signed.headers
            sub = (await c.post(f"/v1/accounts/{account_id}/checkout", json={"plan": "free"}, headers=headers))
            sub = sub.json()["subscription"]
        url = f"/v1/accounts/{account_id}/subscriptions/{sub['id']}/renew"
        with time_machine.travel(T0 + IN_THE_WINDOW, tick=False):
            login = await c.post("/v1/auth/login", json={"email": email, "password": TEST_PASSWORD})
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            async with container.database.engine.connect() as holder:
                await holder.execute(text("SELECT 1 FROM subscriptions WHERE id = :id FOR UPDATE"), {"id": sub["id"]})
                tasks = [asyncio.create_task(c.post(url, headers={**headers, "Idempotency-Key": k})) for k in keys]
                await wait_until_blocked(container, 2)
                await holder.rollback()
            responses = await asyncio.gather(*tasks)
    return responses, sub


async def _committed(container, subscription_id: str) -> tuple[datetime, int, int]:
    """The committed period end, renewals audited and payments recorded."""
    async with container.database.sessionmaker() as s:
        stored = await stored_subscription(s, subscription_id)
        renewals, payments = await renewal_count(s, subscription_id), await payments_of(s, subscription_id)
        return stored.current_period_end, renewals, len(payments)


async def test_a_concurrent_double_submit_with_one_key_extends_once(settings, container) -> None:
    responses, sub = await _race(settings, container, keys=("double-submit", "double-submit"))
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert responses[0].content == responses[1].content
    assert sorted(r.headers.get("idempotent-replayed", "no") for r in responses) == ["no", "true"]
    assert await _committed(container, sub["id"]) == (at(sub["current_period_end"]) + 30 * DAY, 1, 1)


async def test_two_renewals_racing_for_one_period_apply_once(settings, container) -> None:
    """Two keys, one period: the second waits on the period's payments row, then answers what the first did."""
    responses, sub = await _race(settings, container, keys=("first-key", "second-key"))
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert responses[0].json() == responses[1].json()
    assert await _committed(container, sub["id"]) == (at(sub["current_period_end"]) + 30 * DAY, 1, 1)


async def test_a_paid_plan_renews_only_when_an_operator_records_the_payment(client, session, signup, admin) -> None:
    operator = await admin()
    owner = await signup()
    paid = await paid_subscription(client, session, owner, operator)
    assert paid["status"] == "active"

    own = await client.post(f"/v1/accounts/{owner.account_id}/subscriptions/{paid['id']}/renew", headers=owner.headers)
    error_of(own, 409, "payment_required")
    account = await session.get(Account, uuid.UUID(owner.account_id))
    account.suspension_reasons = ["billing", "admin"]
    await session.flush()
    url = f"/v1/admin/subscriptions/{paid['id']}/renew"
    # The operator names the period the payment is for; without it there is nothing to record.
    error_of(await client.post(url, headers=operator.headers), 422, "validation_error")
    error_of(await client.post(url, json={"period_start": "2031-03-10T12:00:00"}, headers=operator.headers), 422,
             "validation_error")  # a period start without its offset is ambiguous
    renewed = await client.post(url, json={"period_start": paid["current_period_end"]}, headers=operator.headers)
    assert renewed.status_code == 200 and at(renewed.json()["current_period_end"]) > at(paid["current_period_end"])
    await session.refresh(account)
    assert account.suspension_reasons == ["admin"]  # the payment lifts only `billing`
    [audited] = (await session.scalars(
        select(AuditEntry).where(AuditEntry.action == "subscription.renewed", AuditEntry.target_id == paid["id"])
    )).all()
    assert audited.actor_id == uuid.UUID(operator.user_id)
    payment = audited.after["payment"]
    assert at(payment.pop("period_start")) == at(paid["current_period_end"])
    assert payment == {"amount_minor": 2900, "currency": "EUR", "source": "admin", "external_reference": None}
