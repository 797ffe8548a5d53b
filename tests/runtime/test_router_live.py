"""The router as the app wires it (routes from the instances repository, on committed data): no database query
per request, and an observed status change answered within about a second."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import event, update

from jushostit.models import Instance
from jushostit.runtime.local.router import ROUTE_TTL_SECONDS
from tests.live import Live, eventually, live  # noqa: F401 - the fixture, for this module


@pytest.fixture
async def routed(live: Live) -> tuple[Live, dict[str, Any]]:  # noqa: F811 - the fixture imported above
    """A running static site of a committed account, and the app whose router serves it."""
    owner = await live.signup("Routed Co")
    await live.checkout(owner, "free")
    instance = await live.ordered(owner, "routed")
    await live.work()
    await live.until_status(owner, instance["id"], "running")
    return live, instance


async def test_a_busy_site_costs_one_query_per_route_ttl_not_one_per_request(routed: tuple[Live, Any]) -> None:
    harness, instance = routed
    statements: list[str] = []

    def on_statement(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    sync_engine = harness.container.database.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", on_statement)
    try:
        started = time.monotonic()
        for _ in range(30):
            page = await harness.page(instance["slug"])
            assert page.status_code == 200 and "<h1>routed</h1>" in page.text
        elapsed = time.monotonic() - started
    finally:
        event.remove(sync_engine, "before_cursor_execute", on_statement)

    assert len(statements) <= elapsed / ROUTE_TTL_SECONDS + 1, statements


async def test_an_instance_observed_stopped_answers_503_within_about_a_second(routed: tuple[Live, Any]) -> None:
    harness, instance = routed
    assert (await harness.page(instance["slug"])).status_code == 200  # its route is cached now

    async with harness.container.database.unit_of_work() as session:  # as the reconciler records it
        await session.execute(
            update(Instance).where(Instance.id == uuid.UUID(instance["id"])).values(observed_status="stopped")
        )
    changed = time.monotonic()

    async def suspended() -> httpx.Response | None:
        response = await harness.page(instance["slug"])
        return response if response.status_code == 503 else None

    answer = await eventually(suspended, "the suspended page", timeout=ROUTE_TTL_SECONDS + 5)
    assert "suspended" in answer.text
    assert time.monotonic() - changed <= ROUTE_TTL_SECONDS + 1.0
