"""The webhook tests run on committed data (a real worker applies the events)."""

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete, select

from jushostit.models import WebhookEvent
from tests.live import Live, live  # noqa: F401 - the fixture, for these tests
from tests.webhooks.helpers import stripe_settings


@pytest.fixture
async def inbox(live: Live) -> AsyncIterator[Live]:  # noqa: F811 - the fixture imported above
    """`live` configured for Stripe; the events the test stored are deleted after it."""
    live.configure(**stripe_settings())
    before = {"ids": set()}
    async with live.container.database.engine.connect() as connection:
        before["ids"] = set(await connection.scalars(select(WebhookEvent.id)))
    yield live
    async with live.container.database.unit_of_work() as session:
        await session.execute(delete(WebhookEvent).where(WebhookEvent.id.not_in(before["ids"] or {uuid.uuid4()})))
