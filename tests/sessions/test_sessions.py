"""Browser sessions for real: a customer's session pool of Debian's Chromium on the local runtime, a session
started through the API on a real uvicorn, and the CDP URL driven over WebSocket through our proxy
(`Target.createTarget`, `Page.navigate` to a page served on loopback, `Runtime.evaluate`). Tokens are per session,
credits are debited once and refunded when no browser could be had, the concurrency limit holds under a burst,
and every way a session ends says why, on the API and in the WebSocket close frame, leaving no browser behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import select, update
from starlette.responses import HTMLResponse

from jushostit.kit.db import utcnow
from jushostit.models import BrowserSession, CreditEntry, ServiceTemplate, Subscription, UsageSample
from jushostit.runtime.local.browsers import BrowserPools
from jushostit.runtime.registry import browser_pools
from jushostit.sessions import service
from tests.events.sse import open_stream
from tests.live import Live, Signup, eventually, live, served

__all__ = ["live"]  # the fixture

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None,
                                reason="Debian's chromium is not installed (.ci/run installs it)")

PAGE = b"<html><head><title>loopback page</title></head><body><script>window.answer = 6 * 7</script></body></html>"


async def page_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await HTMLResponse(PAGE)(scope, receive, send)


class Shop:
    """A customer with a running Chromium pool and credits, and the API on a real server."""

    def __init__(self, live: Live, admin: Signup, base_url: str, http: httpx.AsyncClient) -> None:
        self.live = live
        self.admin = admin
        self.base_url = base_url
        self.http = http

    @property
    def pools(self) -> BrowserPools:
        return browser_pools(self.live.settings)

    async def customer(self, *, credits: int = 5, concurrent: int | None = None) -> tuple[Signup, str]:
        owner = await self.live.paid_starter(self.admin, "Browser Co")
        if concurrent is not None:  # what the plan it bought includes
            async with self.live.container.database.unit_of_work() as session:
                subscription = await session.scalar(select(Subscription).where(
                    Subscription.account_id == uuid.UUID(owner.account_id)))
                assert subscription is not None
                subscription.quotas = {**subscription.quotas, "concurrent_sessions": concurrent}
        if credits:
            granted = await self.http.post(f"/v1/admin/accounts/{owner.account_id}/credits/grants",
                                           json={"amount": credits, "reason": "test credits"},
                                           headers=self.admin.headers)
            assert granted.status_code == 201, granted.text
        pool = await self.live.ordered(owner, "browsers", template="chromium")
        await self.live.converge(owner.account_id)
        assert (await self.live.instance(owner, pool["id"]))["status"] == "running"
        return owner, pool["id"]

    async def start(self, owner: Signup, **body: Any) -> httpx.Response:
        return await self.http.post(f"/v1/accounts/{owner.account_id}/sessions", json=body, headers=owner.headers)

    async def started(self, owner: Signup, **body: Any) -> dict[str, Any]:
        response = await self.start(owner, **body)
        assert response.status_code == 201, response.text
        return response.json()

    async def session(self, owner: Signup, session_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/sessions/{session_id}", headers=owner.headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def balance(self, owner: Signup) -> int:
        response = await self.http.get(f"/v1/accounts/{owner.account_id}/credits", headers=owner.headers)
        assert response.status_code == 200, response.text
        return int(response.json()["balance"])

    def browser_processes(self) -> list[int]:
        """Chromium processes of this test's data dir (their profile directories are under it)."""
        root = str(self.live.settings.data_dir.resolve())
        found = []
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    arguments = f.read().split(b"\0")
            except OSError:
                continue
            if any(a.startswith(b"--user-data-dir=" + root.encode()) for a in arguments):
                found.append(pid)
        return found


@pytest.fixture
async def shop(live: Live) -> AsyncIterator[Shop]:
    admin = await live.admin()
    async with served(live.app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        try:
            yield Shop(live, admin, base_url, http)
        finally:
            await browser_pools(live.settings).shutdown()


@pytest.fixture
async def loopback_page() -> AsyncIterator[str]:
    async with served(page_app) as base_url:
        yield f"{base_url}/page"


async def cdp(connection: websockets.ClientConnection, method: str, params: dict[str, Any] | None = None,
              session: str | None = None) -> dict[str, Any]:
    """One CDP command and its answer (events in between are skipped)."""
    cdp.counter += 1  # type: ignore[attr-defined]
    message: dict[str, Any] = {"id": cdp.counter, "method": method, "params": params or {}}  # type: ignore[attr-defined]
    if session:
        message["sessionId"] = session
    await connection.send(json.dumps(message))
    while True:
        answer = json.loads(await asyncio.wait_for(connection.recv(), timeout=20))
        if answer.get("id") == message["id"]:
            assert "error" not in answer, answer
            return answer["result"]


cdp.counter = 0  # type: ignore[attr-defined]


async def evaluate(connection: websockets.ClientConnection, target: str, expression: str) -> Any:
    result = await cdp(connection, "Runtime.evaluate", {"expression": expression, "returnByValue": True}, target)
    return result["result"].get("value")


async def test_a_customer_drives_a_real_page_through_the_cdp_url_and_ends_the_session(
    shop: Shop, loopback_page: str,
) -> None:
    owner, pool_id = await shop.customer(credits=3)
    assert len(shop.pools.browsers_of(uuid.UUID(pool_id))) == 2  # the template's warm size, started by the pass

    body = await shop.started(owner)
    assert (body["status"], body["warm"], body["credits"], body["credits_left"]) == ("active", True, 1, 2)
    assert body["cdp_url"].startswith(shop.base_url.replace("http://", "ws://") + f"/v1/sessions/{body['id']}/cdp?token=")
    browser = shop.pools.lent((await _row(shop, body["id"])).browser_id or "")
    assert browser is not None and str(browser.port) not in body["cdp_url"]  # never the browser's own port

    async with websockets.connect(body["cdp_url"], max_size=None) as connection:
        target = (await cdp(connection, "Target.createTarget", {"url": "about:blank"}))["targetId"]
        attached = (await cdp(connection, "Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        await cdp(connection, "Page.navigate", {"url": loopback_page}, attached)

        async def loaded() -> bool:
            return await evaluate(connection, attached, "document.readyState") == "complete"

        await eventually(loaded, "the loopback page to load")
        assert await evaluate(connection, attached, "window.answer") == 42
        assert await evaluate(connection, attached, "document.title") == "loopback page"
        assert await evaluate(connection, attached, "location.href") == loopback_page

        # What would reach the host's files is refused at the proxy, with the command's id.
        for method, params in (("Page.navigate", {"url": "file:///etc/hostname"}),
                               ("Target.createTarget", {"url": "FILE:///proc/self/environ"}),
                               ("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": "/tmp"}),
                               ("Network.loadNetworkResource", {"url": "file:///etc/passwd", "options": {}})):
            cdp.counter += 1  # type: ignore[attr-defined]
            await connection.send(json.dumps({"id": cdp.counter, "method": method, "params": params,  # type: ignore[attr-defined]
                                              "sessionId": attached}))
            while True:
                answer = json.loads(await asyncio.wait_for(connection.recv(), timeout=20))
                if answer.get("id") == cdp.counter:  # type: ignore[attr-defined]
                    break
            assert answer["error"]["code"] == -32000, (method, answer)
        assert await evaluate(connection, attached, "location.href") == loopback_page  # still where it was

        ended = await shop.http.post(f"/v1/sessions/{body['id']}/end", headers=owner.headers)
        assert ended.status_code == 200, ended.text
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(connection.recv(), timeout=10)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "ended")  # type: ignore[union-attr]

    shown = await shop.session(owner, body["id"])
    assert (shown["status"], shown["end_reason"], shown["credits"]) == ("ended", "ended", 1)
    assert float(shown["duration_seconds"]) > 0
    async with shop.live.container.database.reader() as session:  # metered: its seconds, to the millisecond
        [sample] = (await session.scalars(select(UsageSample).where(
            UsageSample.source_id == f"session:{body['id']}"))).all()
    assert (sample.metric, sample.quantity, str(sample.account_id)) == (
        "session_seconds", Decimal(shown["duration_seconds"]), owner.account_id)
    assert await shop.balance(owner) == 2
    listed = await shop.http.get(f"/v1/accounts/{owner.account_id}/sessions", headers=owner.headers)
    assert [item["id"] for item in listed.json()["items"]] == [body["id"]]
    assert not browser.alive and not browser.profile.exists()  # discarded with its profile, never reused
    # The pool is topped up to its warm size.
    await eventually(lambda: len(shop.pools.browsers_of(uuid.UUID(pool_id))) == 2, "the pool to be topped up")

    again = await shop.http.post(f"/v1/sessions/{body['id']}/end", headers=owner.headers)
    assert again.status_code == 200 and again.json()["ended_at"] == shown["ended_at"]  # ending twice: nothing


async def test_a_token_opens_only_its_own_session_and_only_while_it_is_active(shop: Shop) -> None:
    first, _ = await shop.customer()
    second, _ = await shop.customer()
    mine = await shop.started(first)
    theirs = await shop.started(second)
    their_token = theirs["cdp_url"].split("token=", 1)[1]
    foreign = mine["cdp_url"].split("?", 1)[0] + f"?token={their_token}"
    for refused in (foreign, mine["cdp_url"].split("?", 1)[0], mine["cdp_url"] + "x"):
        with pytest.raises(websockets.InvalidStatus) as answer:
            async with websockets.connect(refused):
                pass
        assert answer.value.response.status_code == 403
    cross = await shop.http.get(f"/v1/sessions/{mine['id']}", headers=second.headers)
    assert cross.status_code == 404  # another tenant's session does not exist for them
    await shop.http.post(f"/v1/sessions/{mine['id']}/end", headers=first.headers)
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(mine["cdp_url"]):
            pass


async def test_fifty_requests_against_ten_credits_give_exactly_ten_sessions_and_leave_no_browser(shop: Shop) -> None:
    owner, pool_id = await shop.customer(credits=10, concurrent=50)

    answers = await asyncio.gather(*(shop.start(owner) for _ in range(50)))

    codes = sorted(a.status_code for a in answers)
    assert codes.count(201) == 10 and codes.count(402) == 40, codes
    refused = next(a.json() for a in answers if a.status_code == 402)
    assert refused["error"]["code"] == "insufficient_credits" and refused["error"]["details"]["balance"] == 0
    assert await shop.balance(owner) == 0
    async with shop.live.container.database.reader() as session:
        debits = (await session.scalars(select(CreditEntry).where(
            CreditEntry.account_id == uuid.UUID(owner.account_id), CreditEntry.kind == "debit"))).all()
    assert len(debits) == 10
    started = [a.json() for a in answers if a.status_code == 201]
    for body in started:
        await shop.http.post(f"/v1/sessions/{body['id']}/end", headers=owner.headers)

    stopped = await shop.http.delete(f"/v1/instances/{pool_id}", headers=owner.headers)
    assert stopped.status_code == 202
    await shop.live.reconcile(owner.account_id)
    await eventually(lambda: shop.browser_processes() == [], "every browser process to be gone")
    assert not (shop.pools.root / pool_id).exists()


async def test_at_the_concurrency_limit_a_request_waits_in_a_bounded_queue_and_end_still_works(shop: Shop) -> None:
    owner, _ = await shop.customer(credits=5)  # the starter plan: 2 at once
    first = await shop.started(owner)
    await shop.started(owner)
    over = await shop.start(owner)
    assert (over.status_code, over.json()["error"]["code"]) == (409, "session_limit_reached")
    assert over.json()["error"]["details"] == {"limit": 2, "open": 2}
    assert await shop.balance(owner) == 3  # a refusal debits nothing

    waiting = asyncio.create_task(shop.start(owner, wait_seconds=20))
    await eventually(lambda: service.LIVE.waiting.get(uuid.UUID(owner.account_id)) == 1, "the request to queue")
    ended = await shop.http.post(f"/v1/sessions/{first['id']}/end", headers=owner.headers)
    assert ended.status_code == 200  # at the cap, ending works
    third = await waiting
    assert third.status_code == 201, third.text


async def test_every_way_a_session_ends_says_why(shop: Shop) -> None:
    owner, pool_id = await shop.customer(credits=7, concurrent=5)
    database = shop.live.container.database

    # Its maximum lifetime passed.
    timed = await shop.started(owner, timeout_seconds=60)
    async with websockets.connect(timed["cdp_url"]) as connection:
        async with database.unit_of_work() as session:
            await session.execute(update(BrowserSession).where(BrowserSession.id == uuid.UUID(timed["id"]))
                                  .values(expires_at=utcnow() - timedelta(seconds=1)))
        assert (await service.reap(database, shop.pools)) == {uuid.UUID(timed["id"]): "timeout"}
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), timeout=10)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "timeout")  # type: ignore[union-attr]

    # No CDP traffic for the pool's idle timeout (120 s on the chromium template).
    idle = await shop.started(owner)
    service.LIVE.activity[uuid.UUID(idle["id"])].last -= 121
    assert (await service.reap(database, shop.pools)) == {uuid.UUID(idle["id"]): "idle"}

    # Its client went away and did not come back within the pool's disconnect grace (30 s on chromium); one
    # still connected keeps a quiet session open.
    left = await shop.started(owner)
    kept = await shop.started(owner)
    async with websockets.connect(left["cdp_url"]):
        pass
    async with websockets.connect(kept["cdp_url"]):
        activity = service.LIVE.activity[uuid.UUID(left["id"])]
        await eventually(lambda: activity.disconnected_at is not None, "the disconnect to be seen")
        activity.disconnected_at -= 31  # type: ignore[operator]
        service.LIVE.activity[uuid.UUID(kept["id"])].last -= 31
        assert (await service.reap(database, shop.pools)) == {uuid.UUID(left["id"]): "idle"}
    await shop.http.post(f"/v1/sessions/{kept['id']}/end", headers=owner.headers)

    # Its browser died.
    crashed = await shop.started(owner)
    browser = shop.pools.lent((await _row(shop, crashed["id"])).browser_id or "")
    assert browser is not None
    os.killpg(browser.process.pid, signal.SIGKILL)
    await browser.process.wait()
    assert (await service.reap(database, shop.pools)) == {uuid.UUID(crashed["id"]): "crashed"}

    # A connected client keeps a quiet session open within the grace; one connected to nothing does not.
    for reason_of, expected in ((crashed, "crashed"), (timed, "timeout"), (idle, "idle")):
        assert (await shop.session(owner, reason_of["id"]))["end_reason"] == expected

    # Suspended: the pool is stopped by the reconciler, and the session ends with it.
    held = await shop.started(owner)
    account = f"/v1/admin/accounts/{owner.account_id}"
    suspended = await shop.http.post(f"{account}/suspend", json={"reason": "admin"}, headers=shop.admin.headers)
    assert suspended.status_code == 200
    await shop.live.reconcile(owner.account_id)
    assert shop.pools.browsers_of(uuid.UUID(pool_id)) == []
    assert (await service.reap(database, shop.pools)) == {uuid.UUID(held["id"]): "suspended"}
    refused = await shop.start(owner)
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "not_entitled")
    assert await shop.balance(owner) == 1  # six sessions took one credit each


async def test_a_start_that_gets_no_browser_is_refunded(shop: Shop) -> None:
    owner, pool_id = await shop.customer(credits=2)
    await shop.pools.drain(uuid.UUID(pool_id))  # as after a restart, before the reconciler ran the pool again
    failed = await shop.start(owner)
    assert (failed.status_code, failed.json()["error"]["code"]) == (503, "session_start_failed")
    assert await shop.balance(owner) == 2
    async with shop.live.container.database.reader() as session:
        [row] = (await session.scalars(select(BrowserSession).where(
            BrowserSession.account_id == uuid.UUID(owner.account_id)))).all()
    assert (row.status, row.end_reason, row.refunded) == ("ended", "start_failed", True)

    no_credits, _ = await shop.customer(credits=0)
    refused = await shop.start(no_credits)
    assert refused.status_code == 402
    assert refused.json()["error"]["details"] == {"balance": 0, "requested": 1}


async def _row(shop: Shop, session_id: str) -> BrowserSession:
    async with shop.live.container.database.reader() as session:
        row = await session.get(BrowserSession, uuid.UUID(session_id))
        assert row is not None
        return row


@pytest.fixture
async def per_second_pools(live: Live) -> AsyncIterator[None]:
    """The chromium template billing sessions per second (as an operator would set it), for this test."""
    async with live.container.database.unit_of_work() as session:
        template = await session.scalar(select(ServiceTemplate).where(ServiceTemplate.code == "chromium"))
        assert template is not None
        shipped = template.spec
        template.spec = {**shipped, "pool": {**shipped["pool"], "billing": "second"}}
    try:
        yield
    finally:
        async with live.container.database.unit_of_work() as session:
            await session.execute(update(ServiceTemplate).where(ServiceTemplate.code == "chromium")
                                  .values(spec=shipped))


async def test_per_second_billing_warns_before_the_credits_run_out_then_cuts_the_session(
    per_second_pools: None, shop: Shop,
) -> None:
    owner, _ = await shop.customer(credits=100)
    database = shop.live.container.database
    body = await shop.started(owner)
    assert body["credits_left"] == 99  # the first second, taken at the start
    session_id = uuid.UUID(body["id"])

    async def ran_for(seconds: int) -> None:
        """As if the session had run this long (its start moved back; the clock is the database's)."""
        async with database.unit_of_work() as session:
            await session.execute(update(BrowserSession).where(BrowserSession.id == session_id)
                                  .values(started_at=utcnow() - timedelta(seconds=seconds)))

    async with open_stream(shop.live.app, owner.headers) as stream:
        await ran_for(10)
        assert await service.reap(database, shop.pools) == {}
        assert await shop.balance(owner) == 99  # taken in steps of 15 s while plenty is left
        await ran_for(50)
        assert await service.reap(database, shop.pools) == {}
        assert await shop.balance(owner) == 50  # seconds 2 to 50
        warned = await eventually(lambda: stream.events(type="session.credits_low"), "the low-credit event")
        [(_, event)] = warned
        assert (event["session_id"], event["credits_left"]) == (body["id"], 50)
        async with websockets.connect(body["cdp_url"]) as connection:
            await ran_for(130)
            assert await service.reap(database, shop.pools) == {session_id: "credits_exhausted"}
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(connection.recv(), timeout=10)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4003, "credits_exhausted")  # type: ignore[union-attr]
    assert await shop.balance(owner) == 0
    shown = await shop.session(owner, body["id"])
    assert (shown["status"], shown["end_reason"], shown["credits"]) == ("ended", "credits_exhausted", 100)
    async with database.reader() as session:
        row = await session.get(BrowserSession, session_id)
        assert row is not None and row.charged_seconds == 100 and row.warned_at is not None


async def test_the_kubernetes_runtime_refuses_sessions_before_debiting_anything(shop: Shop) -> None:
    owner, _ = await shop.customer(credits=2)
    for setting in ({"runtime": "kubernetes"}, {"runtime": "local", "run_worker_in_serve": False}):
        shop.live.configure(**setting)
        refused = await shop.start(owner)
        assert (refused.status_code, refused.json()["error"]["code"]) == (409, "sessions_not_supported"), setting
    assert await shop.balance(owner) == 2


async def test_a_session_the_server_could_not_end_on_time_costs_no_more_than_its_lifetime(shop: Shop) -> None:
    owner, _ = await shop.customer(credits=2)
    database = shop.live.container.database
    body = await shop.started(owner, timeout_seconds=60)
    async with database.unit_of_work() as session:  # as after three hours down: the reaper could not end it
        started = utcnow() - timedelta(hours=3)
        await session.execute(update(BrowserSession).where(BrowserSession.id == uuid.UUID(body["id"]))
                              .values(started_at=started, expires_at=started + timedelta(seconds=60)))
    assert await service.reap(database, shop.pools) == {uuid.UUID(body["id"]): "timeout"}
    shown = await shop.session(owner, body["id"])
    assert Decimal(shown["duration_seconds"]) == 60


async def test_when_serve_stops_its_sessions_end_with_their_browsers(shop: Shop) -> None:
    owner, _ = await shop.customer(credits=2)
    body = await shop.started(owner)
    assert await service.end_all(shop.live.container.database, shop.pools, reason="crashed") == 1
    shown = await shop.session(owner, body["id"])
    assert (shown["status"], shown["end_reason"]) == ("ended", "crashed")
    assert shop.pools.lent((await _row(shop, body["id"])).browser_id or "") is None


async def test_a_start_repeated_with_its_idempotency_key_answers_the_same_session_with_a_new_token(shop: Shop) -> None:
    owner, _ = await shop.customer(credits=3)
    key = {"Idempotency-Key": f"retry-{uuid.uuid4().hex}"}
    first = await shop.http.post(f"/v1/accounts/{owner.account_id}/sessions", json={},
                                 headers={**owner.headers, **key})
    again = await shop.http.post(f"/v1/accounts/{owner.account_id}/sessions", json={},
                                 headers={**owner.headers, **key})
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json()["id"] == first.json()["id"] and again.json()["cdp_url"] != first.json()["cdp_url"]
    assert await shop.balance(owner) == 2  # debited once
    with pytest.raises(websockets.InvalidStatus):  # the first answer's token was replaced
        async with websockets.connect(first.json()["cdp_url"]):
            pass
    async with websockets.connect(again.json()["cdp_url"]):
        pass
    await shop.http.post(f"/v1/sessions/{first.json()['id']}/end", headers=owner.headers)
    ended = await shop.http.post(f"/v1/accounts/{owner.account_id}/sessions", json={},
                                 headers={**owner.headers, **key})
    assert (ended.status_code, ended.json()["error"]["code"]) == (409, "session_ended")
