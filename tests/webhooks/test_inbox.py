"""The webhook inbox: only genuine, fresh events from Stripe are stored, each exactly once, and a refused
request stores nothing (REFERENCE §1 F2)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import time_machine
from sqlalchemy import func, select, text

from jushostit.models import WebhookEvent
from tests.billing.helpers import error_of
from tests.conftest import asgi_client
from tests.webhooks.helpers import PREVIOUS_SECRET, event, signed, stripe_settings

URL = "/v1/webhooks/stripe"


async def stored(session) -> int:
    return int(await session.scalar(select(func.count()).select_from(WebhookEvent)))


async def process_jobs(session, row_id) -> list[str]:
    rows = await session.execute(
        text("SELECT status::text FROM procrastinate_jobs WHERE task_name = 'webhooks.process'"
             " AND args->>'event_id' = :id"),
        {"id": str(row_id)},
    )
    return [status for (status,) in rows]


async def test_a_signed_event_is_stored_once_and_processed_once_however_often_it_is_delivered(
    app_factory, session
) -> None:
    async with asgi_client(app_factory(**stripe_settings())) as client:
        body, headers = signed(event("invoice.paid", {"id": "in_1", "object": "invoice", "customer": "cus_1"}))
        first = await client.post(URL, content=body, headers=headers)
        again = await client.post(URL, content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": True, "event_id": json.loads(body)["id"], "duplicate": False}
    assert again.status_code == 200 and again.json()["duplicate"] is True
    row = await session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == json.loads(body)["id"]))
    assert row is not None and await stored(session) == 1
    assert (row.provider, row.event_type, row.object_id, row.customer_ref, row.status) == (
        "stripe", "invoice.paid", "in_1", "cus_1", "pending"
    )
    assert row.payload == json.loads(body)
    assert await process_jobs(session, row.id) == ["todo"]


async def test_every_configured_secret_is_accepted_so_a_secret_can_be_rotated(app_factory, session) -> None:
    async with asgi_client(app_factory(**stripe_settings())) as client:
        body, headers = signed(event("customer.created", {"id": "cus_2", "object": "customer"}), PREVIOUS_SECRET)
        response = await client.post(URL, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert await stored(session) == 1


async def test_forged_unsigned_stale_and_future_dated_requests_are_refused_and_store_nothing(
    app_factory, session
) -> None:
    genuine = event("invoice.paid", {"id": "in_3", "object": "invoice"})
    body, headers = signed(genuine)
    # The clock stands still, so "301 s ahead" is 301 s ahead when the server reads it, however slow the run.
    with time_machine.travel(datetime.now(UTC), tick=False):
        now = int(time.time())
        async with asgi_client(app_factory(**stripe_settings())) as client:
            refusals = {
                "no header": await client.post(URL, content=body, headers={"Content-Type": "application/json"}),
                "another secret": await client.post(URL, content=body, headers=signed(genuine, "whsec_forger")[1]),
                "tampered body": await client.post(URL, content=body.replace(b"in_3", b"in_4"), headers=headers),
                "301 s old": await client.post(URL, content=body, headers=signed(genuine, at=now - 301)[1]),
                "301 s ahead": await client.post(URL, content=body, headers=signed(genuine, at=now + 301)[1]),
                "no timestamp": await client.post(URL, content=body, headers={"Stripe-Signature": "v1=abc"}),
            }
            within = await client.post(URL, content=body, headers=signed(genuine, at=now - 250)[1])
    for what, response in refusals.items():
        assert error_of(response, 400, "bad_signature"), what
    assert within.status_code == 200, within.text  # inside the tolerance: accepted (once)
    assert await stored(session) == 1


async def test_a_signed_body_that_is_not_a_stripe_event_is_refused_and_stores_nothing(app_factory, session) -> None:
    async with asgi_client(app_factory(**stripe_settings())) as client:
        for body in ("not json", "[]", json.dumps({"id": "evt_1", "type": "x", "created": 1}),
                     json.dumps({"id": "evt_1", "type": "x", "created": "yesterday", "data": {"object": {}}}),
                     json.dumps({"id": "e" * 256, "type": "x", "created": 1, "data": {"object": {}}})):
            payload, headers = signed(body)
            error_of(await client.post(URL, content=payload, headers=headers), 400, "malformed_event")
    assert await stored(session) == 0


async def test_a_body_over_1_mib_is_refused_and_stores_nothing(app_factory, session) -> None:
    huge = event("invoice.paid", {"id": "in_5", "object": "invoice", "description": "x" * (1 << 20)})
    async with asgi_client(app_factory(**stripe_settings())) as client:
        body, headers = signed(huge)
        error_of(await client.post(URL, content=body, headers=headers), 413, "payload_too_large")
    assert await stored(session) == 0


async def test_without_a_webhook_secret_the_route_is_not_there(client, session) -> None:
    body, headers = signed(event("invoice.paid", {"id": "in_6", "object": "invoice"}))
    error_of(await client.post(URL, content=body, headers=headers), 404, "webhooks_not_configured")
    assert await stored(session) == 0
