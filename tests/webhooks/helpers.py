"""Stripe events as Stripe sends them: JSON bodies signed with the SDK's own helper."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import stripe
from pydantic import SecretStr
from sqlalchemy import select

from jushostit.billing.stripe_api import stripe_client
from jushostit.kit.db import unit_of_work, utcnow
from jushostit.models import WebhookEvent
from jushostit.webhooks import service as inbox
from tests.conftest import asgi_client, joined_session

SECRET = "whsec_current_test_secret"
PREVIOUS_SECRET = "whsec_previous_test_secret"
STRIPE_TEST_BASE = "https://stripe.test"


def stripe_settings(**more: Any) -> dict[str, Any]:
    """Settings overrides for a server that takes Stripe's events (two secrets: a rotation in progress)."""
    return {
        "stripe_webhook_secrets": [SecretStr(SECRET), SecretStr(PREVIOUS_SECRET)],
        "stripe_secret_key": SecretStr("sk_test_jushostit"),
        "stripe_api_base": STRIPE_TEST_BASE,
        **more,
    }


def event(event_type: str, obj: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": created or int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": event_type,
        "data": {"object": obj},
    }


def signed(body: dict[str, Any] | str, secret: str = SECRET, *, at: int | None = None) -> tuple[bytes, dict[str, str]]:
    payload = body if isinstance(body, str) else json.dumps(body)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=at)
    return payload.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}


async def delivered(application: Any, session: Any, settings: Any, event_type: str, obj: dict[str, Any]) -> Any:
    """A new Stripe event about `obj` (id, object, customer), signed, posted to the inbox and processed as the
    worker's job would, inside the test's transaction; answers its stored row."""
    body = event(event_type, obj)
    payload, headers = signed(body)
    async with asgi_client(application) as http:
        answer = await http.post("/v1/webhooks/stripe", content=payload, headers=headers)
    assert answer.status_code == 200, answer.text
    row_id = await session.scalar(select(WebhookEvent.id).where(WebhookEvent.event_id == body["id"]))
    async with joined_session(session.bind) as worker, unit_of_work(worker):
        await inbox.process(worker, event_id=row_id, client=stripe_client(settings), now=utcnow())
    session.expire_all()
    return await session.get(WebhookEvent, row_id)
