"""Each user may hold JUSHOSTIT_SSE_MAX_STREAMS_PER_USER event streams open at once, counted across every API
process on the database: each open stream holds one of the user's slots (an advisory lock on its process's
connection); the next answers 429 in the error contract's shape."""

from __future__ import annotations

import uuid

from jushostit.events.broker import Broker
from jushostit.kit.db import libpq_url
from tests.events.sse import open_stream
from tests.live import Live, eventually
from tests.streaming import first_response


async def test_a_stream_beyond_the_user_s_cap_is_refused_with_429(live: Live) -> None:
    live.configure(sse_max_streams_per_user=2)
    owner = await live.signup("Busy Co")
    created = await live.client.post("/v1/me/api-keys", json={"name": "watch", "scopes": ["instances:read"]},
                                     headers=owner.headers)
    assert created.status_code == 201, created.text
    by_key = {"Authorization": f"Bearer {created.json()['key']}"}
    neighbour = await live.signup("Quiet Co")

    async with open_stream(live.app, owner.headers), open_stream(live.app, by_key):
        refused = await first_response(live.app, "GET", "/v1/events", headers=owner.headers)

        assert refused.status_code == 429, refused.text
        assert refused.json() == {"error": {
            "code": "rate_limited", "message": "At most 2 event streams may be open at once per user; close one first",
            "details": {"retry_after": 5},
        }}
        assert refused.headers["retry-after"] == "5"
        async with open_stream(live.app, neighbour.headers):  # the cap is per user
            pass

    # Closed streams give their places back.
    async with open_stream(live.app, owner.headers), open_stream(live.app, by_key):
        pass


async def test_the_stream_cap_counts_a_user_s_streams_across_api_processes(database_url: str) -> None:
    # Two brokers on one database, as two API processes have.
    first, second = Broker(libpq_url(database_url)), Broker(libpq_url(database_url))
    user = uuid.uuid4()
    try:
        a1 = await first.subscribe(user, max_streams=2)
        a2 = await first.subscribe(user, max_streams=2)
        assert a1 is not None and a2 is not None and first.streams_of(user) == 2

        assert await second.subscribe(user, max_streams=2) is None
        assert await second.subscribe(uuid.uuid4(), max_streams=2) is not None  # another user has places

        first.unsubscribe(a1)
        b1 = await eventually(lambda: second.subscribe(user, max_streams=2), "the place freed in the other process")
        assert await first.subscribe(user, max_streams=2) is None

        await first.close()  # a process that stops (or dies: its connection goes) frees its streams' places
        b2 = await eventually(lambda: second.subscribe(user, max_streams=2), "the places of the closed process")
        assert b1.slot != b2.slot and second.streams_of(user) == 2
        assert await second.subscribe(user, max_streams=2) is None
    finally:
        await first.close()
        await second.close()
