"""Checkout through the payment-provider interface (manual provider), admin mark-paid, the subscription list,
tenant isolation, the members-don't-see-billing rule and the entitlement on GET /v1/accounts/{id}."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import time_machine
from sqlalchemy import func, select

from jushostit.billing.periods import add_months
from jushostit.models import (
    Account,
    AccountStatus,
    AuditEntry,
    BillingMode,
    Membership,
    Payment,
    Role,
    Subscription,
)
from tests.billing.helpers import error_of, payments_of, reconcile_jobs

FREE_QUOTAS = {"cpu_millicores": 500, "memory_mib": 512, "storage_gib": 1, "max_instances": 1, "concurrent_sessions": 1,
               "session_max_minutes": 5}
NO_QUOTAS = {"cpu_millicores": 0, "memory_mib": 0, "storage_gib": 0, "max_instances": 0, "concurrent_sessions": 0,
             "session_max_minutes": 0}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def _audit(session, account_id: str, action: str) -> list[AuditEntry]:
    stmt = select(AuditEntry).where(AuditEntry.account_id == uuid.UUID(account_id), AuditEntry.action == action)
    return list((await session.scalars(stmt.order_by(AuditEntry.seq))).all())


async def _subscription_count(session, account_id: str) -> int:
    stmt = select(func.count()).select_from(Subscription).where(Subscription.account_id == uuid.UUID(account_id))
    return int(await session.scalar(stmt) or 0)


async def _account(session, account_id: str) -> Account:
    session.expire_all()
    account = await session.get(Account, uuid.UUID(account_id))
    assert account is not None
    return account


async def test_free_checkout_is_active_for_30_days_and_asks_for_a_reconcile(client, session, signup) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with time_machine.travel(now, tick=False):
        owner = await signup()
        before = (await client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
        response = await client.post(
            f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "free"}, headers=owner.headers
        )
        after = (await client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["checkout_url"] is None
    subscription = body["subscription"]
    assert (subscription["plan"], subscription["status"], subscription["provider"]) == ("free", "active", "manual")
    assert subscription["account_id"] == owner.account_id
    assert _at(subscription["current_period_start"]) == now
    assert _at(subscription["current_period_end"]) == now + timedelta(days=30)
    assert subscription["cancel_at_period_end"] is False and subscription["cancelled_at"] is None

    # The account: pending → active, and the entitlement follows the facts.
    assert before["status"] == "pending" and after["status"] == "active"
    assert before["entitlement"] == {
        "level": "stopped", "reasons": ["no active subscription"], "warning_banner": None, "access": "full",
        "quotas": NO_QUOTAS, "holds": [],
    }
    assert after["entitlement"] == {
        "level": "running", "reasons": [], "warning_banner": None, "access": "full", "quotas": FREE_QUOTAS,
        "holds": [],
    }
    # Audited in the same transaction, and a reconcile of the account was deferred after the commit.
    created = await _audit(session, owner.account_id, "subscription.created")
    assert len(created) == 1 and created[0].target_id == subscription["id"]
    assert created[0].after["plan"] == "free" and created[0].after["status"] == "active"
    status_change = await _audit(session, owner.account_id, "account.billing_status_changed")
    assert [(e.before["status"], e.after["status"]) for e in status_change] == [("pending", "active")]
    jobs = await reconcile_jobs(session, owner.account_id)
    assert len(jobs) == 1
    task, args, queueing_lock, lock, _ = jobs[0]
    assert task == "account.reconcile" and args == {"account_id": owner.account_id}
    # One waiting per account; no procrastinate lock (the pass takes the account's advisory lock itself).
    assert queueing_lock == f"reconcile:{owner.account_id}" and lock is None


async def test_paid_checkout_is_pending_until_an_admin_marks_it_paid_lifting_only_the_billing_hold(
    client, session, signup, admin
) -> None:
    owner = await signup()
    boss = await admin()
    account = await _account(session, owner.account_id)
    account.billing_mode = BillingMode.card
    account.status = AccountStatus.suspended
    account.suspension_reasons = ["billing", "admin"]
    account.past_due_since = datetime.now(UTC) - timedelta(days=20)
    await session.flush()

    response = await client.post(
        f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "starter"}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    pending = response.json()["subscription"]
    assert pending["status"] == "pending" and pending["provider"] == "manual"
    assert response.json()["checkout_url"] is None
    assert pending["current_period_start"] == pending["current_period_end"]  # no period until paid
    shown = (await client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
    assert shown["entitlement"]["level"] == "stopped" and shown["entitlement"]["quotas"] == NO_QUOTAS
    assert len(await reconcile_jobs(session, owner.account_id)) == 1

    now = datetime.now(UTC).replace(microsecond=0)
    with time_machine.travel(now, tick=False):
        paid = await client.post(f"/v1/admin/subscriptions/{pending['id']}/mark-paid", headers=boss.headers)
    assert paid.status_code == 200, paid.text
    active = paid.json()
    assert active["status"] == "active" and active["id"] == pending["id"]
    assert _at(active["current_period_start"]) == now
    assert _at(active["current_period_end"]) == add_months(now, 1)

    account = await _account(session, owner.account_id)
    # The payment lifts `billing` and the past-due clock; the admin hold stays (REFERENCE F4, F14).
    assert account.suspension_reasons == ["admin"] and account.past_due_since is None
    assert account.status == AccountStatus.suspended
    assert account.budget_minor == 5000  # the plan's default budget, as the account had none
    shown = (await client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
    assert shown["entitlement"]["level"] == "stopped" and shown["entitlement"]["reasons"] == ["suspended: admin"]
    assert shown["entitlement"]["quotas"]["max_instances"] == 3  # the quotas are granted; the hold stops them
    marked = await _audit(session, owner.account_id, "subscription.marked_paid")
    assert len(marked) == 1 and marked[0].actor_id == uuid.UUID(boss.user_id)
    # The first paid period is the subscription's first payments row, keyed on the pending period's end.
    [payment] = await payments_of(session, pending["id"])
    assert (payment.period_start, payment.period_end) == (_at(pending["current_period_end"]), add_months(now, 1))
    assert (payment.amount_minor, payment.currency, payment.source) == (900, "EUR", "admin")
    assert payment.recorded_by == uuid.UUID(boss.user_id)
    change = await _audit(session, owner.account_id, "account.billing_status_changed")
    assert change[-1].before["suspension_reasons"] == ["billing", "admin"]
    assert change[-1].after["suspension_reasons"] == ["admin"]

    again = await client.post(f"/v1/admin/subscriptions/{pending['id']}/mark-paid", headers=boss.headers)
    error_of(again, 409, "subscription_not_pending")
    error_of(await client.post(f"/v1/admin/subscriptions/{uuid.uuid4()}/mark-paid", headers=boss.headers), 404)
    error_of(
        await client.post(f"/v1/admin/subscriptions/{pending['id']}/mark-paid", headers=owner.headers),
        403, "admin_required",
    )


async def test_mark_paid_activates_an_account_without_other_holds(client, session, signup, admin) -> None:
    owner = await signup()
    boss = await admin()
    account = await _account(session, owner.account_id)
    account.billing_mode = BillingMode.invoice
    account.status = AccountStatus.past_due
    account.past_due_since = datetime.now(UTC) - timedelta(days=3)
    await session.flush()
    shown = (await client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
    assert "past due" in shown["entitlement"]["warning_banner"]

    pending = (
        await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "pro"}, headers=owner.headers)
    ).json()["subscription"]
    paid = await client.post(f"/v1/admin/subscriptions/{pending['id']}/mark-paid", headers=boss.headers)
    assert paid.status_code == 200, paid.text
    account = await _account(session, owner.account_id)
    assert (account.status, account.suspension_reasons, account.past_due_since) == (AccountStatus.active, [], None)
    shown = (await client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
    assert shown["entitlement"]["level"] == "running" and shown["entitlement"]["warning_banner"] is None


async def test_bad_checkouts_are_refused_in_the_error_shape_and_change_nothing(client, session, signup, admin) -> None:
    owner = await signup()
    url = f"/v1/accounts/{owner.account_id}/checkout"
    error_of(await client.post(url, json={"plan": "no-such-plan"}, headers=owner.headers), 404, "plan_not_found")
    refused = error_of(await client.post(url, json={"plan": "starter"}, headers=owner.headers), 409,
                       "billing_mode_not_allowed")
    assert refused["details"] == {"billing_mode": "free", "allowed": ["card", "invoice", "prepaid"]}
    for body in (
        {"plan": "free", "status": "active"},
        {"plan": "free", "price_minor": 0},
        {"plan": 1},
        {"plan": ""},
        {"plan": "fr\x00ee"},
        {},
        ["free"],
    ):
        error_of(await client.post(url, json=body, headers=owner.headers), 422, "validation_error")
    # A retired plan cannot be checked out (its subscribers keep it: see the renew tests).
    boss = await admin()
    retire = await client.post("/v1/admin/plans/free/retire", headers=boss.headers)
    assert retire.status_code == 200
    error_of(await client.post(url, json={"plan": "free"}, headers=owner.headers), 409, "plan_retired")

    assert await _subscription_count(session, owner.account_id) == 0
    account = await _account(session, owner.account_id)
    assert account.status == AccountStatus.pending
    assert await _audit(session, owner.account_id, "subscription.created") == []
    assert await reconcile_jobs(session, owner.account_id) == []


async def test_a_second_checkout_of_an_open_plan_is_a_conflict(client, session, signup) -> None:
    owner = await signup()
    url = f"/v1/accounts/{owner.account_id}/checkout"
    first = await client.post(url, json={"plan": "free"}, headers=owner.headers)
    assert first.status_code == 201
    error = error_of(await client.post(url, json={"plan": "free"}, headers=owner.headers), 409, "already_subscribed")
    assert error["details"] == {"subscription_id": first.json()["subscription"]["id"]}
    assert await _subscription_count(session, owner.account_id) == 1


async def test_checkout_honours_the_idempotency_key(client, session, signup) -> None:
    owner = await signup()
    url = f"/v1/accounts/{owner.account_id}/checkout"
    key = {"Idempotency-Key": f"checkout-{uuid.uuid4()}", **owner.headers}
    first = await client.post(url, json={"plan": "free"}, headers=key)
    replay = await client.post(url, json={"plan": "free"}, headers=key)
    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json() and replay.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    error_of(await client.post(url, json={"plan": "pro"}, headers=key), 409, "idempotency_key_reused")
    assert await _subscription_count(session, owner.account_id) == 1
    assert len(await _audit(session, owner.account_id, "subscription.created")) == 1
    # Keys are per principal: another user's identical key is a different request.
    other = await signup()
    theirs = await client.post(
        f"/v1/accounts/{other.account_id}/checkout", json={"plan": "free"},
        headers={"Idempotency-Key": key["Idempotency-Key"], **other.headers},
    )
    assert theirs.status_code == 201 and theirs.json()["subscription"]["account_id"] == other.account_id
    error_of(await client.post(url, json={"plan": "free"}, headers={**owner.headers, "Idempotency-Key": ""}), 422)


async def test_members_do_not_see_or_change_billing(client, session, signup) -> None:
    owner = await signup()
    member = await signup()
    session.add(Membership(account_id=uuid.UUID(owner.account_id), user_id=uuid.UUID(member.user_id),
                           role=Role.member))
    await session.flush()
    sid = (
        await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "free"}, headers=owner.headers)
    ).json()["subscription"]["id"]
    base = f"/v1/accounts/{owner.account_id}"
    error_of(await client.get(f"{base}/subscriptions", headers=member.headers), 403, "insufficient_role")
    error_of(await client.post(f"{base}/checkout", json={"plan": "free"}, headers=member.headers), 403)
    error_of(await client.post(f"{base}/subscriptions/{sid}/renew", headers=member.headers), 403)
    error_of(await client.post(f"{base}/subscriptions/{sid}/cancel", json={"at": "now"}, headers=member.headers), 403)
    # The account itself: no billing block, but the entitlement (what runs, and why) is shown to every member.
    shown = (await client.get(base, headers=member.headers)).json()
    assert shown["billing"] is None and shown["entitlement"]["level"] == "running"
    rows = (await session.scalars(select(Subscription).where(Subscription.id == uuid.UUID(sid)))).all()
    assert [(s.status, s.cancelled_at) for s in rows] == [("active", None)]


async def test_another_tenants_subscription_is_404_and_unchanged(client, session, signup) -> None:
    a = await signup()
    b = await signup()
    b_sub = (
        await client.post(f"/v1/accounts/{b.account_id}/checkout", json={"plan": "free"}, headers=b.headers)
    ).json()["subscription"]
    own = f"/v1/accounts/{a.account_id}/subscriptions/{b_sub['id']}"
    error_of(await client.post(f"{own}/renew", headers=a.headers), 404, "subscription_not_found")
    error_of(await client.post(f"{own}/cancel", json={"at": "now"}, headers=a.headers), 404, "subscription_not_found")
    theirs = f"/v1/accounts/{b.account_id}"
    error_of(await client.post(f"{theirs}/subscriptions/{b_sub['id']}/renew", headers=a.headers), 404)
    error_of(await client.get(f"{theirs}/subscriptions", headers=a.headers), 404)
    error_of(await client.post(f"{theirs}/checkout", json={"plan": "free"}, headers=a.headers), 404)
    listed = (await client.get(f"{theirs}/subscriptions", headers=b.headers)).json()["items"]
    assert listed == [b_sub]


async def test_subscriptions_list_is_paginated(client, signup) -> None:
    owner = await signup()
    base = f"/v1/accounts/{owner.account_id}"
    ids = []
    for _ in range(3):
        sub = (await client.post(f"{base}/checkout", json={"plan": "free"}, headers=owner.headers)).json()
        ids.append(sub["subscription"]["id"])
        cancelled = await client.post(
            f"{base}/subscriptions/{ids[-1]}/cancel", json={"at": "now"}, headers=owner.headers
        )
        assert cancelled.status_code == 200
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await client.get(f"{base}/subscriptions", params=params, headers=owner.headers)
        assert page.status_code == 200 and len(page.json()["items"]) <= 2
        seen += [s["id"] for s in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    error_of(await client.get(f"{base}/subscriptions", params={"cursor": "!!"}, headers=owner.headers), 400)


async def test_a_subscription_keeps_the_terms_it_was_sold_with_when_the_plan_is_edited(
    client, session, signup, admin
) -> None:
    boss, owner = await admin(), await signup()
    account = await _account(session, owner.account_id)
    account.billing_mode = BillingMode.invoice
    await session.flush()
    pending = (await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "starter"},
                                 headers=owner.headers)).json()["subscription"]
    paid = await client.post(f"/v1/admin/subscriptions/{pending['id']}/mark-paid", headers=boss.headers)
    assert paid.status_code == 200, paid.text
    sold = await session.get(Subscription, uuid.UUID(pending["id"]))
    await session.refresh(sold)
    terms = (sold.plan_version, sold.price_minor, sold.currency, sold.interval, dict(sold.quotas))

    edited = await client.patch("/v1/admin/plans/starter", headers=boss.headers, json={
        "price_minor": 4900, "interval": "year",
        "quotas": {"cpu_millicores": 500, "memory_mib": 512, "storage_gib": 1, "max_instances": 1}})
    assert edited.status_code == 200 and edited.json()["version"] == terms[0] + 1, edited.text

    # The existing subscriber keeps version 1: its quotas, and the price and interval its next period is paid at.
    shown = (await client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
    assert shown["entitlement"]["quotas"]["max_instances"] == terms[4]["max_instances"] == 3
    renewed = await client.post(f"/v1/admin/subscriptions/{pending['id']}/renew", headers=boss.headers,
                                json={"period_start": paid.json()["current_period_end"]})
    assert renewed.status_code == 200, renewed.text
    payment = await session.scalar(select(Payment).where(
        Payment.subscription_id == uuid.UUID(pending["id"])).order_by(Payment.period_start.desc()))
    assert (payment.amount_minor, payment.currency) == (terms[1], terms[2]) == (900, "EUR")
    period = renewed.json()
    days = (datetime.fromisoformat(period["current_period_end"]) - datetime.fromisoformat(
        paid.json()["current_period_end"])).days
    assert 28 <= days <= 31  # still monthly

    # A new subscriber buys the new version.
    newcomer = await signup()
    other = await _account(session, newcomer.account_id)
    other.billing_mode = BillingMode.invoice
    await session.flush()
    fresh = (await client.post(f"/v1/accounts/{newcomer.account_id}/checkout", json={"plan": "starter"},
                               headers=newcomer.headers)).json()["subscription"]
    row = await session.get(Subscription, uuid.UUID(fresh["id"]))
    assert (row.plan_version, row.price_minor, row.interval, row.quotas["max_instances"]) == (terms[0] + 1, 4900, "year", 1)
