"""GET /v1/events across API replicas: two real `jushostit serve` processes on one database. A change made
through process B (an admin suspend, then a worker's reconcile) reaches a subscriber of process A through
PostgreSQL LISTEN/NOTIFY — and only the subscribers whose accounts it concerns."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.live import Live, Signup, eventually

JUSHOSTIT = Path(sys.executable).parent / "jushostit"
START_BUDGET = 90.0  # generous: the suite may share a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_processes(live: Live, database_url: str, logs: Path, count: int) -> Iterator[list[str]]:
    """`count` API processes on the test database, without workers; yields their base URLs."""
    settings = live.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUSHOSTIT_") and k != "DATABASE_URL"}
    env.update(
        DATABASE_URL=database_url,
        JUSHOSTIT_DATA_DIR=str(settings.data_dir),
        JUSHOSTIT_SECRET_KEYS=settings.secret_keys.get_secret_value(),  # type: ignore[union-attr]
        JUSHOSTIT_JWT_SECRET=settings.jwt_secret.get_secret_value(),  # type: ignore[union-attr]
        JUSHOSTIT_RUN_WORKER_IN_SERVE="false",
        JUSHOSTIT_HOST="127.0.0.1",
        JUSHOSTIT_LOG_LEVEL="WARNING",
        JUSHOSTIT_DB_POOL_SIZE="2",
    )
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for index in range(count):
            port = free_port()
            with (logs / f"serve-{index}.log").open("wb") as out:
                processes.append(subprocess.Popen([str(JUSHOSTIT), "serve"], env={**env, "JUSHOSTIT_PORT": str(port)},
                                                  stdout=out, stderr=out, start_new_session=True))
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


async def wait_ready(urls: list[str], logs: Path) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        async def ready() -> bool:
            for url in urls:
                try:
                    if (await client.get(f"{url}/readyz")).status_code != 200:
                        return False
                except httpx.TransportError:
                    return False
            return True

        try:
            await eventually(ready, "both serve processes to be ready", timeout=START_BUDGET, interval=0.1)
        except AssertionError as error:
            output = "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(logs.glob("serve-*.log")))
            raise AssertionError(f"{error}\n{output}") from None


class Subscription:
    """One SSE stream, read in the background into `events` (each with the monotonic time it arrived)."""

    def __init__(self, client: httpx.AsyncClient, url: str, who: Signup) -> None:
        self.client, self.url, self.who = client, url, who
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.connected = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        async with self.client.stream("GET", f"{self.url}/v1/events", headers=self.who.headers) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith(": connected"):
                    self.connected.set()
                elif line.startswith("data: "):
                    self.events.append((time.monotonic(), json.loads(line.removeprefix("data: "))))

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Subscription]:
        self.task = asyncio.create_task(self._read())
        try:
            await asyncio.wait_for(asyncio.shield(self.connected.wait()), timeout=30)
            yield self
        finally:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def find(self, **match: str) -> tuple[float, dict[str, Any]] | None:
        for at, event in self.events:
            if all(event.get(k) == v for k, v in match.items()):
                return at, event
        return None


async def test_events_cross_api_processes_and_reach_only_their_accounts(live: Live, database_url: str,
                                                                         tmp_path: Path) -> None:
    admin = await live.admin()
    tenants = []
    for name in ("Tenant X", "Tenant Y"):
        owner = await live.signup(name)
        await live.checkout(owner, "free")
        tenants.append((owner, await live.ordered(owner, "watched")))
    await live.work()
    (x, x_site), (y, y_site) = tenants
    for owner, site in tenants:
        await live.until_status(owner, site["id"], "running")

    logs = tmp_path / "logs"
    logs.mkdir()
    with serve_processes(live, database_url, logs, 2) as (a_url, b_url):
        await wait_ready([a_url, b_url], logs)
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as client:
            x_stream, y_stream = Subscription(client, a_url, x), Subscription(client, a_url, y)
            async with x_stream.open(), y_stream.open(), live.worker_running():
                started = time.monotonic()
                await suspend_through_b(client, b_url, admin, x)
                await eventually(lambda: x_stream.find(type="instance.status", instance_id=x_site["id"],
                                                       status="stopped"), "X's instance event on process A")
                account_event = x_stream.find(type="account.status", account_id=x.account_id, status="suspended")
                assert account_event is not None
                instance_event = x_stream.find(type="instance.status")[0] - started  # type: ignore[index]
                await suspend_through_b(client, b_url, admin, y)
                await eventually(lambda: y_stream.find(type="instance.status", instance_id=y_site["id"],
                                                       status="stopped"), "Y's instance event on process A")
                # The broker of process A fans each notification out to all its streams at once: Y's events
                # have reached X's stream too if they ever will.

    assert {e["account_id"] for _, e in x_stream.events} == {x.account_id}, x_stream.events
    assert {e["account_id"] for _, e in y_stream.events} == {y.account_id}, y_stream.events
    assert y_site["id"] not in json.dumps([e for _, e in x_stream.events])
    print(f"\nadmin suspend on process B → on process A's stream: account event {(account_event[0] - started) * 1000:.0f} ms, "
          f"instance stopped {instance_event * 1000:.0f} ms")


async def suspend_through_b(client: httpx.AsyncClient, b_url: str, admin: Signup, owner: Signup) -> None:
    response = await client.post(f"{b_url}/v1/admin/accounts/{owner.account_id}/suspend", json={"reason": "admin"},
                                 headers=admin.headers)
    assert response.status_code == 200, response.text
