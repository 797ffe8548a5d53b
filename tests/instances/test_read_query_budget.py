"""The read budget (issue 7, "Cheaper"): an authenticated `GET /v1/instances/{id}` costs at most two SQL
queries — who is asking, and what they read — and no transaction (no BEGIN/COMMIT round trips).

Counted on the engine the app uses, on committed data (`live`: the production session, not the test's
savepoints). Timing targets live in bench/reconcile_bench.py --http, never here.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from jushostit.kit.db import ping_when_idle, sqlalchemy_url
from jushostit.models import ApiKey
from tests.live import Live


@dataclass
class Seen:
    statements: list[str] = field(default_factory=list)
    transactions: int = 0


@contextlib.contextmanager
def counting(engine: AsyncEngine) -> Iterator[Seen]:
    """Every statement sent on the engine (and the autocommit engine sharing its pool), and every transaction
    begun outside autocommit, while the block runs."""
    seen = Seen()
    sync_engine = engine.sync_engine

    def on_statement(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        seen.statements.append(statement)

    def on_begin(conn: Any) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            seen.transactions += 1

    event.listen(sync_engine, "before_cursor_execute", on_statement)
    event.listen(sync_engine, "begin", on_begin)
    try:
        yield seen
    finally:
        event.remove(sync_engine, "before_cursor_execute", on_statement)
        event.remove(sync_engine, "begin", on_begin)


async def an_instance(live: Live) -> tuple[Any, dict[str, Any]]:
    owner = await live.signup("Budget Co")
    await live.checkout(owner, "free")
    return owner, await live.ordered(owner, "budget")


async def test_authenticated_instance_read_makes_at_most_two_queries(live: Live) -> None:
    owner, instance = await an_instance(live)

    with counting(live.container.database.engine) as seen:
        response = await live.client.get(f"/v1/instances/{instance['id']}", headers=owner.headers)

    assert response.status_code == 200, response.text
    assert response.json()["id"] == instance["id"] and response.json()["name"] == "budget"
    assert len(seen.statements) <= 2, seen.statements
    assert seen.transactions == 0


async def test_api_key_instance_read_makes_at_most_two_queries(live: Live) -> None:
    owner, instance = await an_instance(live)
    created = await live.client.post("/v1/me/api-keys", json={"name": "reader", "scopes": ["instances:read"]},
                                     headers=owner.headers)
    assert created.status_code == 201, created.text
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    path = f"/v1/instances/{instance['id']}"

    with counting(live.container.database.engine) as first:
        assert (await live.client.get(path, headers=key)).status_code == 200
    with counting(live.container.database.engine) as second:
        response = await live.client.get(path, headers=key)

    assert response.status_code == 200 and response.json()["id"] == instance["id"]
    assert len(second.statements) <= 2, second.statements
    assert second.transactions == 0
    # The first use also records the key's last use (once a minute): one UPDATE more, committed on its own.
    assert len(first.statements) <= 3 and first.transactions == 0, first.statements
    async with live.container.database.reader() as session:
        row = await session.get(ApiKey, uuid.UUID(created.json()["id"]))
        assert row is not None and row.last_used_at is not None


async def test_a_read_of_another_tenants_instance_is_still_a_404_within_the_budget(live: Live) -> None:
    _, instance = await an_instance(live)
    stranger = await live.signup("Elsewhere")

    with counting(live.container.database.engine) as seen:
        response = await live.client.get(f"/v1/instances/{instance['id']}", headers=stranger.headers)

    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert len(seen.statements) <= 2 and seen.transactions == 0


# The read budget has no ping round trip: a pooled connection is pinged only after being idle a while
# (kit/db.py ping_when_idle). What that costs, and what it keeps:
async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(text("SELECT pg_backend_pid()")))


async def kill(container: Any, pid: int) -> None:
    """Terminate the backend and wait (up to 10 s) until it is gone."""
    async with container.database.autocommit.connect() as connection:
        assert await connection.scalar(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})


async def test_a_pooled_connection_lost_while_idle_is_replaced_by_the_ping(live: Live) -> None:
    engine = create_async_engine(sqlalchemy_url(live.container.database_url), pool_size=1, max_overflow=0)
    ping_when_idle(engine, 0.0)  # every reuse counts as idle: pinged
    try:
        first = await backend_pid(engine)
        await kill(live.container, first)

        second = await backend_pid(engine)  # no error: the ping found it dead, the pool reconnected

        assert second != first
    finally:
        await engine.dispose()


async def test_a_connection_lost_moments_after_use_fails_once_then_the_pool_is_renewed(live: Live) -> None:
    engine = create_async_engine(sqlalchemy_url(live.container.database_url), pool_size=1, max_overflow=0)
    ping_when_idle(engine, 3600.0)  # never idle long enough: not pinged
    try:
        first = await backend_pid(engine)
        await kill(live.container, first)

        with pytest.raises(DBAPIError) as failed:
            await backend_pid(engine)
        assert failed.value.connection_invalidated
        assert await backend_pid(engine) != first
    finally:
        await engine.dispose()
