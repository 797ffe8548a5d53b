"""Renewals exactly once per period (REFERENCE §1 F1): a renewal is keyed on (subscription, period) — a
payments row, unique on it, inserted in the transaction that extends the period by compare-and-set."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import time_machine
from sqlalchemy import text, update

from jushostit.app import create_app
from jushostit.billing.periods import add_months
from jushostit.models import Account, BillingMode, Subscription, User
from tests.billing.helpers import (
    at,
    error_of,
    free_subscription,
    login,
    paid_subscription,
    payments_of,
    renewal_count,
    stored_subscription,
    wait_until_blocked,
)
from tests.conftest import asgi_client, committed_email_reader, sign_up

T0 = datetime(2031, 3, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


async def test_admin_renewal_retried_for_the_same_period_adds_one_period(client, session, signup, admin) -> None:
    operator = await admin()
    owner = await signup()
    sub = await paid_subscription(client, session, owner, operator)
    url = f"/v1/admin/subscriptions/{sub['id']}/renew"
    body = {"period_start": sub["current_period_end"], "external_reference": "INV-2031-0042"}

    first = await client.post(url, json=body, headers=operator.headers)
    assert first.status_code == 200, first.text
    assert at(first.json()["current_period_end"]) == add_months(at(sub["current_period_end"]), 1)
    # The retried click names the same period: the same subscription, not a second period, not an error.
    retried = await client.post(url, json=body, headers=operator.headers)
    assert retried.status_code == 200 and retried.json() == first.json()
    # A period that is neither the next one nor a paid one is a stale view: 409, and nothing changes.
    stale = {"period_start": (at(sub["current_period_end"]) + DAY).isoformat()}
    error = error_of(await client.post(url, json=stale, headers=operator.headers), 409, "renewal_period_mismatch")
    assert at(error["details"]["next_period_start"]) == at(first.json()["current_period_end"])

    stored = await stored_subscription(session, sub["id"])
    assert stored.current_period_end == at(first.json()["current_period_end"])
    assert await renewal_count(session, sub["id"]) == 1
    payments = await payments_of(session, sub["id"])
    # mark-paid's first period, then this one: amount in minor units, who recorded it and the reference.
    assert [(p.period_end, p.source, p.amount_minor, p.currency, p.provider) for p in payments] == [
        (at(sub["current_period_end"]), "admin", 2900, "EUR", "manual"),
        (stored.current_period_end, "admin", 2900, "EUR", "manual"),
    ]
    assert payments[1].period_start == at(sub["current_period_end"])
    assert payments[1].external_reference == "INV-2031-0042"
    assert payments[1].recorded_by == uuid.UUID(operator.user_id)


async def test_same_idempotency_key_answers_the_same_renewal(client, session, signup, admin) -> None:
    operator = await admin()
    owner = await signup()
    sub = await paid_subscription(client, session, owner, operator)
    url = f"/v1/admin/subscriptions/{sub['id']}/renew"
    keyed = {**operator.headers, "Idempotency-Key": "pay-april"}
    body = {"period_start": sub["current_period_end"], "amount_minor": 2500}

    first = await client.post(url, json=body, headers=keyed)
    assert first.status_code == 200, first.text
    replay = await client.post(url, json=body, headers=keyed)
    assert replay.status_code == 200 and replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"
    # The same key for another request is refused, not run.
    other = {"period_start": first.json()["current_period_end"]}
    error_of(await client.post(url, json=other, headers=keyed), 409, "idempotency_key_reused")

    stored = await stored_subscription(session, sub["id"])
    assert stored.current_period_end == at(first.json()["current_period_end"])
    assert await renewal_count(session, sub["id"]) == 1
    assert [p.amount_minor for p in await payments_of(session, sub["id"])] == [2900, 2500]


async def test_free_plan_renews_only_in_its_last_days(client, session, signup) -> None:
    with time_machine.travel(T0, tick=False):
        owner = await signup()
        sub = await free_subscription(client, owner)
    url = f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}/renew"

    with time_machine.travel(T0 + 26 * DAY, tick=False):  # 4 days left: too early with the default 3
        early = await client.post(url, headers=await login(client, owner))
    error = error_of(early, 409, "renewal_not_open")
    assert at(error["details"]["opens_at"]) == T0 + 27 * DAY
    assert at(error["details"]["current_period_end"]) == T0 + 30 * DAY
    stored = await stored_subscription(session, sub["id"])
    assert stored.current_period_end == T0 + 30 * DAY and await payments_of(session, sub["id"]) == []
    assert await renewal_count(session, sub["id"]) == 0

    with time_machine.travel(T0 + 27 * DAY, tick=False):
        renewed = await client.post(url, headers=await login(client, owner))
    assert renewed.status_code == 200, renewed.text
    assert at(renewed.json()["current_period_end"]) == T0 + 60 * DAY
    [payment] = await payments_of(session, sub["id"])
    assert (payment.period_start, payment.source, payment.amount_minor) == (T0 + 30 * DAY, "customer", 0)
    assert payment.recorded_by == uuid.UUID(owner.user_id)


async def test_free_plan_renewal_window_is_configurable(app_factory, session, signup) -> None:
    with time_machine.travel(T0, tick=False):
        owner = await signup()
    async with asgi_client(app_factory(free_renewal_window_days=10)) as wide:
        with time_machine.travel(T0, tick=False):
            sub = await free_subscription(wide, owner)
        with time_machine.travel(T0 + 20 * DAY, tick=False):
            renewed = await wide.post(
                f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}/renew", headers=await login(wide, owner)
            )
    assert renewed.status_code == 200, renewed.text
    assert at(renewed.json()["current_period_end"]) == T0 + 60 * DAY


async def test_free_plan_never_renews_more_than_one_period_ahead(app_factory, session, signup) -> None:
    with time_machine.travel(T0, tick=False):
        owner = await signup()
    # A window longer than the period: only "one period ahead" still holds it back.
    async with asgi_client(app_factory(free_renewal_window_days=45)) as wide:
        with time_machine.travel(T0, tick=False):
            sub = await free_subscription(wide, owner)
        url = f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}/renew"
        with time_machine.travel(T0 + DAY, tick=False):
            headers = await login(wide, owner)
            answers = [await wide.post(url, headers=headers) for _ in range(5)]  # five renewals in a row
            # Naming the period paid by the first again is that same renewal.
            named = await wide.post(url, json={"period_start": sub["current_period_end"]}, headers=headers)
    assert answers[0].status_code == 200, answers[0].text
    for refused in answers[1:]:
        error = error_of(refused, 409, "renewal_not_open")
        assert at(error["details"]["opens_at"]) == T0 + 30 * DAY  # once the paid-ahead period has begun
    assert named.status_code == 200 and named.json() == answers[0].json()
    stored = await stored_subscription(session, sub["id"])
    assert stored.current_period_end == T0 + 60 * DAY
    assert len(await payments_of(session, sub["id"])) == 1 and await renewal_count(session, sub["id"]) == 1


async def test_customer_cannot_renew_a_paid_plan_without_payment_on_any_provider(
    client, session, signup, admin
) -> None:
    operator = await admin()
    owner = await signup()
    sub = await paid_subscription(client, session, owner, operator)
    url = f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}/renew"
    for provider in ("manual", "stripe", "paypal"):  # paypal: one this installation does not run
        await session.execute(
            update(Subscription).where(Subscription.id == uuid.UUID(sub["id"])).values(provider=provider)
        )
        for body in (None, {"period_start": sub["current_period_end"]}):
            error_of(await client.post(url, json=body, headers=owner.headers), 409, "payment_required")
    stored = await stored_subscription(session, sub["id"])
    assert stored.current_period_end == at(sub["current_period_end"])
    assert await renewal_count(session, sub["id"]) == 0 and len(await payments_of(session, sub["id"])) == 1


async def test_period_start_moves_forward(client, session, signup) -> None:
    """Each renewal moves the start to the period running at the renewal: one period on, never a future one
    (a start after now would entitle nothing until then)."""
    with time_machine.travel(T0, tick=False):
        owner = await signup()
        sub = await free_subscription(client, owner)
    url = f"/v1/accounts/{owner.account_id}/subscriptions/{sub['id']}/renew"
    expected = [(T0 + 28 * DAY, T0, T0 + 60 * DAY), (T0 + 58 * DAY, T0 + 30 * DAY, T0 + 90 * DAY),
                (T0 + 88 * DAY, T0 + 60 * DAY, T0 + 120 * DAY)]
    for when, start, end in expected:
        with time_machine.travel(when, tick=False):
            headers = await login(client, owner)
            renewed = await client.post(url, headers=headers)
            assert renewed.status_code == 200, renewed.text
            assert (at(renewed.json()["current_period_start"]), at(renewed.json()["current_period_end"])) == (
                start, end,
            )
            shown = (await client.get(f"/v1/accounts/{owner.account_id}", headers=headers)).json()
            assert shown["entitlement"]["level"] == "running"
    starts = [p.period_start for p in await payments_of(session, sub["id"])]
    assert starts == [T0 + 30 * DAY, T0 + 60 * DAY, T0 + 90 * DAY]


async def test_paid_periods_stay_anchored_on_the_original_day(client, session, signup, admin) -> None:
    """Paid on Jan 31: periods end Feb 28, Mar 31, Apr 30, May 31 — the moving start (Feb 28) never drags the
    anchor to the 28th."""
    jan31 = datetime(2031, 1, 31, 9, 0, tzinfo=UTC)
    with time_machine.travel(jan31, tick=False):
        operator = await admin()
        owner = await signup()
        sub = await paid_subscription(client, session, owner, operator)
    assert at(sub["current_period_end"]) == datetime(2031, 2, 28, 9, 0, tzinfo=UTC)
    for paid_on, start, end in [
        (datetime(2031, 2, 20, tzinfo=UTC), (1, 31), (3, 31)),
        (datetime(2031, 3, 20, tzinfo=UTC), (2, 28), (4, 30)),
        (datetime(2031, 4, 20, tzinfo=UTC), (3, 31), (5, 31)),
    ]:
        with time_machine.travel(paid_on, tick=False):
            renewed = await client.post(
                f"/v1/admin/subscriptions/{sub['id']}/renew", json={"period_start": sub["current_period_end"]},
                headers=await login(client, operator),
            )
        assert renewed.status_code == 200, renewed.text
        sub = renewed.json()
        assert at(sub["current_period_start"]) == datetime(2031, *start, 9, 0, tzinfo=UTC)
        assert at(sub["current_period_end"]) == datetime(2031, *end, 9, 0, tzinfo=UTC)


# --- real concurrency: a committing app, one session per request ----------------------------------------------


async def test_concurrent_admin_renewals_of_one_period_add_one_period(settings, container) -> None:
    application = create_app(settings, container)
    async with asgi_client(application) as c:
        signed = []
        for who in ("customer", "operator"):
            email = f"{who}-{uuid.uuid4().hex[:10]}@example.com"
            signed.append(await sign_up(c, committed_email_reader(container), email, who.title()))
        customer, operator = signed
        async with container.database.sessionmaker() as s, s.begin():
            await s.execute(update(User).where(User.id == uuid.UUID(operator.user_id))
                            .values(is_platform_admin=True))
            await s.execute(update(Account).where(Account.id == uuid.UUID(customer.account_id))
                            .values(billing_mode=BillingMode.invoice))
        owner_headers = customer.headers
        admin_headers = operator.headers
        checkout = await c.post(f"/v1/accounts/{customer.account_id}/checkout", json={"plan": "pro"},
                                headers=owner_headers)
        sid = checkout.json()["subscription"]["id"]
        sub = (await c.post(f"/v1/admin/subscriptions/{sid}/mark-paid", headers=admin_headers)).json()
        url, body = f"/v1/admin/subscriptions/{sid}/renew", {"period_start": sub["current_period_end"]}

        # Every request reaches its decisive statement before any can commit: the subscription row is held
        # by another transaction until all of them wait on a lock.
        async with container.database.engine.connect() as holder:
            await holder.execute(text("SELECT 1 FROM subscriptions WHERE id = :id FOR UPDATE"), {"id": sid})
            tasks = [asyncio.create_task(c.post(url, json=body, headers=admin_headers)) for _ in range(4)]
            await wait_until_blocked(container, 4)
            await holder.rollback()
        answers = await asyncio.gather(*tasks)

    assert [r.status_code for r in answers] == [200] * 4, [r.text for r in answers]
    assert len({r.content for r in answers}) == 1  # every one answers the same subscription
    async with container.database.sessionmaker() as s:
        stored = await stored_subscription(s, sid)
        assert stored.current_period_end == add_months(at(sub["current_period_end"]), 1)
        assert await renewal_count(s, sid) == 1
        payments = await payments_of(s, sid)
    assert len(payments) == 2  # mark-paid's and this period's, once
    assert (payments[1].period_start, payments[1].period_end) == (at(sub["current_period_end"]), stored.current_period_end)
