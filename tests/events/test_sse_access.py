"""A stream outlives its request: access is checked again at every heartbeat, so a logout, a revoked key or a
removed membership ends it (or stops that account's events)."""

from __future__ import annotations

import asyncio

import pytest

from jushostit.events import endpoints
from tests.live import Live, eventually


def subscribed(live: Live) -> bool:
    return bool(live.app.state.broker._subscribers)


@pytest.fixture
def quick_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoints, "HEARTBEAT_SECONDS", 0.2)


async def test_logging_out_ends_an_open_stream(live: Live, quick_heartbeat: None) -> None:
    owner = await live.signup("Stream Co")
    # The ASGI transport hands the response over when the stream ends, so the request finishing is the proof.
    stream = asyncio.create_task(live.client.get("/v1/events", headers=owner.headers))
    await eventually(lambda: subscribed(live), "the stream to subscribe")
    assert (await live.client.post("/v1/auth/logout", headers=owner.headers)).status_code == 204
    response = await asyncio.wait_for(stream, timeout=10)
    assert response.status_code == 200 and response.text.startswith(": connected")


async def test_a_revoked_api_key_ends_its_stream(live: Live, quick_heartbeat: None) -> None:
    owner = await live.signup("Key Co")
    created = await live.client.post("/v1/me/api-keys", json={"name": "watch", "scopes": ["instances:read"]},
                                     headers=owner.headers)
    key = created.json()
    stream = asyncio.create_task(live.client.get("/v1/events", headers={"Authorization": f"Bearer {key['key']}"}))
    await eventually(lambda: subscribed(live), "the stream to subscribe")
    assert (await live.client.delete(f"/v1/me/api-keys/{key['id']}", headers=owner.headers)).status_code == 200
    response = await asyncio.wait_for(stream, timeout=10)
    assert response.status_code == 200
