"""Processing stored events on a real worker: each is applied once, from the object re-read at Stripe (the
SDK's HTTP calls answered on Stripe's documented shapes by respx); what we do not act on is kept and marked;
what names a customer we do not know is flagged for admins; failures are retried, recorded and replayable."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import httpx
import respx
from sqlalchemy import select, text, update

from jushostit.billing.service import sold_terms
from jushostit.kit.db import utcnow
from jushostit.models import Account, AuditEntry, Plan, Subscription, WebhookEvent
from jushostit.webhooks.tasks import pull_from_stripe
from tests.live import Live
from tests.stripe_stand_in import stripe_stand_in
from tests.webhooks.helpers import STRIPE_TEST_BASE, event, signed

URL = "/v1/webhooks/stripe"


async def deliver(live: Live, body: dict) -> WebhookEvent:
    payload, headers = signed(body)
    response = await live.client.post(URL, content=payload, headers=headers)
    assert response.status_code == 200, response.text
    return await row_of(live, body["id"])


async def row_of(live: Live, event_id: str) -> WebhookEvent:
    async with live.container.database.unit_of_work() as session:
        row = await session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id))
        assert row is not None
        return row


async def with_customer(live: Live, customer: str) -> str:
    owner = await live.signup("Stripe Customer")
    async with live.container.database.unit_of_work() as session:
        await session.execute(
            update(Account).where(Account.id == uuid.UUID(owner.account_id)).values(provider_customer_id=customer)
        )
    return owner.account_id


def deleted_customer(customer: str) -> httpx.Response:
    return httpx.Response(200, json={"id": customer, "object": "customer", "deleted": True})


async def test_an_event_of_a_type_we_do_not_act_on_is_kept_and_marked_ignored(inbox: Live) -> None:
    row = await deliver(inbox, event("product.created", {"id": "prod_1", "object": "product"}))
    await inbox.work()
    row = await row_of(inbox, row.event_id)
    assert (row.status, row.attempts, row.last_error) == ("ignored", 1, None)


async def test_an_event_about_a_customer_we_do_not_know_is_flagged_and_listed_for_admins(inbox: Live) -> None:
    admin = await inbox.admin()
    stranger = event("customer.deleted", {"id": "cus_nobody", "object": "customer", "deleted": True})
    row = await deliver(inbox, stranger)
    with respx.mock(base_url=STRIPE_TEST_BASE, assert_all_called=False) as stripe_api:
        route = stripe_api.get("/v1/customers/cus_nobody").mock(return_value=deleted_customer("cus_nobody"))
        await inbox.work()
    assert not route.called  # not applied: nothing asked of Stripe
    row = await row_of(inbox, row.event_id)
    assert (row.status, row.account_id) == ("unmatched", None)
    listed = await inbox.client.get("/v1/admin/webhook-events", params={"status": "unmatched"}, headers=admin.headers)
    assert listed.status_code == 200, listed.text
    assert [(item["event_id"], item["customer_ref"]) for item in listed.json()["items"]] == [
        (stranger["id"], "cus_nobody")
    ]
    detail = await inbox.client.get(f"/v1/admin/webhook-events/{row.id}", headers=admin.headers)
    assert detail.status_code == 200 and detail.json()["payload"] == stranger


async def test_an_event_is_applied_from_the_object_stripe_returns_not_from_the_payload(inbox: Live) -> None:
    account_id = await with_customer(inbox, "cus_alive")
    # The payload says deleted; Stripe says the customer exists: nothing changes.
    row = await deliver(inbox, event("customer.deleted", {"id": "cus_alive", "object": "customer", "deleted": True}))
    with respx.mock(base_url=STRIPE_TEST_BASE) as stripe_api:
        stripe_api.get("/v1/customers/cus_alive").mock(
            return_value=httpx.Response(200, json={"id": "cus_alive", "object": "customer", "email": "a@b.c"})
        )
        await inbox.work()
    assert (await row_of(inbox, row.event_id)).status == "processed"
    async with inbox.container.database.unit_of_work() as session:
        account = await session.get(Account, uuid.UUID(account_id))
        assert account is not None and account.provider_customer_id == "cus_alive"


async def test_a_deleted_customer_is_unlinked_from_its_account_once_and_audited(inbox: Live) -> None:
    account_id = await with_customer(inbox, "cus_gone")
    body = event("customer.deleted", {"id": "cus_gone", "object": "customer", "deleted": True})
    row = await deliver(inbox, body)
    with respx.mock(base_url=STRIPE_TEST_BASE) as stripe_api:
        route = stripe_api.get("/v1/customers/cus_gone").mock(return_value=deleted_customer("cus_gone"))
        await inbox.work()
        await deliver(inbox, body)  # a redelivery: stored already, not processed again
        await inbox.work()
    assert route.call_count == 1
    row = await row_of(inbox, row.event_id)
    assert (row.status, row.account_id) == ("processed", uuid.UUID(account_id))
    async with inbox.container.database.unit_of_work() as session:
        account = await session.get(Account, uuid.UUID(account_id))
        assert account is not None and account.provider_customer_id is None
        entries = list(await session.scalars(select(AuditEntry).where(
            AuditEntry.action == "account.payment_customer_removed", AuditEntry.target_id == account_id)))
    assert [(e.before, e.after["provider_customer_id"]) for e in entries] == [({"provider_customer_id": "cus_gone"}, None)]


async def test_a_transient_stripe_error_is_recorded_and_retried_later(inbox: Live) -> None:
    await with_customer(inbox, "cus_flaky")
    row = await deliver(inbox, event("customer.deleted", {"id": "cus_flaky", "object": "customer"}))
    with respx.mock(base_url=STRIPE_TEST_BASE) as stripe_api:
        stripe_api.get("/v1/customers/cus_flaky").mock(
            return_value=httpx.Response(503, json={"error": {"type": "api_error", "message": "Try again"}})
        )
        await inbox.work()
    row = await row_of(inbox, row.event_id)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error is not None and "HTTP 503" in row.last_error and "sk_test" not in row.last_error
    async with inbox.container.database.engine.connect() as connection:
        retry = (await connection.execute(text(
            "SELECT status::text, scheduled_at > now() FROM procrastinate_jobs"
            " WHERE task_name = 'webhooks.process' AND args->>'event_id' = :id"), {"id": str(row.id)})).all()
        await connection.execute(text(
            "DELETE FROM procrastinate_jobs WHERE task_name = 'webhooks.process' AND args->>'event_id' = :id"),
            {"id": str(row.id)})
        await connection.commit()
    assert retry == [("todo", True)]  # waiting for its backoff


async def test_a_permanent_error_fails_the_event_at_once_and_an_admin_replay_applies_it(inbox: Live) -> None:
    admin = await inbox.admin()
    account_id = await with_customer(inbox, "cus_later")
    row = await deliver(inbox, event("customer.deleted", {"id": "cus_later", "object": "customer"}))
    with respx.mock(base_url=STRIPE_TEST_BASE) as stripe_api:
        stripe_api.get("/v1/customers/cus_later").mock(return_value=httpx.Response(404, json={
            "error": {"type": "invalid_request_error", "message": "No such customer: 'cus_later'"}}))
        await inbox.work()
    failed = await row_of(inbox, row.event_id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.last_error is not None and "No such customer" in failed.last_error

    member = await inbox.signup("Not An Admin")
    refused = await inbox.client.post(f"/v1/admin/webhook-events/{row.id}/replay", headers=member.headers)
    assert refused.status_code == 403
    replayed = await inbox.client.post(f"/v1/admin/webhook-events/{row.id}/replay", headers=admin.headers)
    assert replayed.status_code == 202 and replayed.json()["status"] == "pending", replayed.text
    again = await inbox.client.post(f"/v1/admin/webhook-events/{row.id}/replay", headers=admin.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "webhook_event_pending"
    with respx.mock(base_url=STRIPE_TEST_BASE) as stripe_api:
        stripe_api.get("/v1/customers/cus_later").mock(return_value=deleted_customer("cus_later"))
        await inbox.work()
    done = await row_of(inbox, row.event_id)
    assert (done.status, done.attempts, done.last_error) == ("processed", 1, None)
    async with inbox.container.database.unit_of_work() as session:
        account = await session.get(Account, uuid.UUID(account_id))
        assert account is not None and account.provider_customer_id is None
        replays = list(await session.scalars(select(AuditEntry).where(
            AuditEntry.action == "webhook_event.replayed", AuditEntry.target_id == str(row.id))))
    assert [entry.before["status"] for entry in replays] == ["failed"]


async def test_the_periodic_pull_converges_every_open_stripe_subscription_and_one_failure_stops_none(
    inbox: Live,
) -> None:
    period_start = int(time.time()) - 86400
    rows = {}
    for name in ("steady", "flaky"):
        account_id = await with_customer(inbox, f"cus_{name}_{uuid.uuid4().hex[:6]}")
        async with inbox.container.database.unit_of_work() as session:
            plan = await session.scalar(select(Plan).where(Plan.code == "starter"))
            row = Subscription(
                account_id=uuid.UUID(account_id), plan_id=plan.id, provider="stripe", status="active",
                **sold_terms(plan),
                current_period_start=utcnow() - timedelta(days=40), current_period_end=utcnow() - timedelta(days=10),
                external_id=f"sub_{name}_{uuid.uuid4().hex[:6]}",
            )
            session.add(row)
            await session.flush()
            rows[name] = (row.id, row.external_id)
    router, stripe = stripe_stand_in()
    with router:
        stripe.put({
            "id": rows["steady"][1], "object": "subscription", "status": "active", "customer": None,
            "cancel_at_period_end": False, "metadata": {},
            "items": {"data": [{"current_period_start": period_start, "current_period_end": period_start + 30 * 86400}]},
        })
        router.get(f"/v1/subscriptions/{rows['flaky'][1]}").mock(
            return_value=httpx.Response(500, json={"error": {"type": "api_error", "message": "boom"}}))
        converged, failed = await pull_from_stripe(0)
    assert (converged, failed) == (1, 1)
    async with inbox.container.database.unit_of_work() as session:
        steady = await session.get(Subscription, rows["steady"][0])
        flaky = await session.get(Subscription, rows["flaky"][0])
        assert int(steady.current_period_end.timestamp()) == period_start + 30 * 86400
        assert flaky.current_period_end < utcnow()  # unchanged: tried again at the next pull
