"""Reconciler benchmark, everything measured side by side in one run on one database.

1. The cost of a no-op resync per account (10,000 accounts, entitled and already converged, half of them with
   one running instance) next to one bare `SELECT 1` round trip on the same database, with the SQL statements
   per account (batched reads only: a fixed few per chunk of accounts), the secrets decrypted (none) and the
   runtime writes (none). Goal: under 0.2 ms per account without instances. The resync runs chunk by chunk
   as the periodic job does (`reconcile_batch`) against an in-memory runtime, so the figure is the control
   plane's own cost. Also printed: one account through the reconcile job's body, the path a fact change takes.
2. The time from an admin action (suspend / unsuspend) to the observed status change of a running
   static-site instance, with a real worker in the same process.
3. (--http) An authenticated `GET /v1/instances/{id}` (session token, API key) next to `GET /healthz`, and the
   local router (`<slug>.localhost`) next to the upstream it proxies, each at 20 concurrent clients against a
   real uvicorn server on loopback (`wrk` when installed, else an httpx load generator in a child process),
   with the SQL statements, transactions and pings (database round trips) one read costs.

Run: .venv/bin/python bench/reconcile_bench.py [--accounts 10000] [--http [--http-seconds 5]]  (embedded PostgreSQL in a temp dir, or
DATABASE_URL when set).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography.fernet import Fernet
from sqlalchemy import event, insert, select, text

from jushostit.app import create_app
from jushostit.billing.service import sold_terms
from jushostit.bootstrap import open_container
from jushostit.config import Settings
from jushostit.kit.db import utcnow
from jushostit.kit.logging import configure_logging
from jushostit.models import Account, AccountStatus, Instance, Membership, Plan, Subscription, User
from jushostit.reconcile import service
from jushostit.reconcile.tasks import RESYNC_CHUNK
from jushostit.runtime.protocol import AccountState, Observed, ObservedInstance
from jushostit.runtime.registry import local_driver
from jushostit.server import run_worker


class InMemoryRuntime:
    """A runtime that runs nothing and remembers what it was told: the resync figures measure the control
    plane's own cost per account (facts, locks, desired state, write-back), not a runtime's. The local runtime
    would need 5,000 child processes here; its per-instance cost is a health probe (measured in figure 2)."""

    def __init__(self) -> None:
        self.running: dict[uuid.UUID, bool] = {}

    async def apply(self, desired: AccountState) -> Observed:
        observed = Observed()
        for instance in desired.instances:
            if self.running.get(instance.id) != instance.run:
                if instance.run:
                    instance.secret_env.values()  # a start sends the environment: the only time it is decrypted
                self.running[instance.id] = instance.run
                observed.writes += 1
            observed.instances[instance.id] = ObservedInstance("running" if instance.run else "stopped")
        return observed

    async def remove_instance(self, account_id: uuid.UUID, instance_id: uuid.UUID) -> None:
        self.running.pop(instance_id, None)

    async def destroy(self, account_id: uuid.UUID) -> None:
        return None


async def make_accounts(container, count: int, *, with_instance: int = 0) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """`count` entitled accounts on the free plan, the first `with_instance` of them with one n8n instance
    (generated secrets stored encrypted, as an order leaves them). Returns (without, with) instance ids."""
    now = utcnow()
    rows = [{"id": uuid.uuid4(), "name": f"bench-{i}", "status": AccountStatus.active, "suspension_reasons": []}
            for i in range(count)]
    async with container.database.unit_of_work() as session:
        free = await session.scalar(select(Plan).where(Plan.code == "free"))
        await session.execute(insert(Account), rows)
        await session.execute(insert(Subscription), [
            {"account_id": r["id"], "plan_id": free.id, "provider": "manual", "status": "active", **sold_terms(free),
             "current_period_start": now, "current_period_end": now + timedelta(days=30)} for r in rows])
        instances = [{"id": uuid.uuid4(), "account_id": r["id"], "template_code": "n8n", "name": "flow",
                      "slug": f"flow-{uuid.uuid4().hex[:10]}", "tier": "small", "desired_level": "running",
                      "observed_status": "provisioning"} for r in rows[:with_instance]]
        if instances:
            await session.execute(insert(Instance), instances)
    ids = [r["id"] for r in rows]
    return ids[with_instance:], ids[:with_instance]


async def time_select_one(container, rounds: int) -> float:
    async with container.database.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
        started = time.perf_counter()
        for _ in range(rounds):
            await connection.execute(text("SELECT 1"))
        return (time.perf_counter() - started) / rounds


@dataclass
class ResyncFigure:
    per_account_ms: float
    statements_per_account: float
    decrypted: int
    writes: int


class CountingBox:
    """The secret box, counting decryptions."""

    def __init__(self, inner) -> None:
        self.inner, self.decrypted = inner, 0

    def decrypt(self, token: str) -> str:
        self.decrypted += 1
        return self.inner.decrypt(token)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def time_noop_resync(container, ids: list[uuid.UUID], runtime: InMemoryRuntime) -> ResyncFigure:
    """One no-op resync pass over `ids` (already converged), as the periodic job runs it: chunk by chunk."""
    box = CountingBox(container.secret_box)
    writes = 0
    with counting_queries(container.database.engine) as count:
        started = time.perf_counter()
        for at in range(0, len(ids), RESYNC_CHUNK):
            done, written = await service.reconcile_batch(container.database, container.settings, box, runtime,
                                                          ids[at:at + RESYNC_CHUNK], deadline_horizon=timedelta(0))
            assert done == len(ids[at:at + RESYNC_CHUNK])
            writes += written
        elapsed = time.perf_counter() - started
    return ResyncFigure(elapsed / len(ids) * 1000, count.statements / len(ids), box.decrypted, writes)


async def time_job_path(container, ids: list[uuid.UUID], runtime: InMemoryRuntime) -> float:
    """One account through the reconcile job's body (the path a fact change takes), no-op, per account."""
    started = time.perf_counter()
    for account_id in ids:
        observed = await service.reconcile_account(
            container.database, container.settings, container.secret_box, runtime, account_id
        )
        assert observed is not None and observed.writes == 0
    return (time.perf_counter() - started) / len(ids)


async def ids_of(container) -> list[uuid.UUID]:
    async with container.database.reader() as session:
        return list((await session.scalars(select(Account.id).order_by(Account.id))).all())


async def bench_user(client: httpx.AsyncClient, container, *, platform_admin: bool = False) -> tuple[dict[str, str], str]:
    """A signed-up user with a confirmed address (set in the database: the bench reads no mailbox), signed in:
    (their bearer headers, their account id)."""
    email, password = f"b{uuid.uuid4().hex[:8]}@example.com", "bench passphrase " + uuid.uuid4().hex
    signed_up = await client.post("/v1/auth/signup", json={"email": email, "password": password, "account_name": "Bench"})
    assert signed_up.status_code == 202, signed_up.text
    async with container.database.unit_of_work() as session:
        user = await session.scalar(select(User).where(User.email == email))
        user.email_verified = True
        user.is_platform_admin = platform_admin
        account_id = await session.scalar(select(Membership.account_id).where(Membership.user_id == user.id))
    tokens = (await client.post("/v1/auth/login", json={"email": email, "password": password})).json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}, str(account_id)


async def time_admin_action(container, settings: Settings, rounds: int) -> list[tuple[str, float]]:
    app = create_app(settings, container)
    transport = httpx.ASGITransport(app=app)
    results = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        user_headers, account_id = await bench_user(client, container, platform_admin=True)
        await client.post(f"/v1/accounts/{account_id}/checkout", json={"plan": "free"}, headers=user_headers)
        order = await client.post(f"/v1/accounts/{account_id}/instances", json={"template": "static-site", "name": "bench"},
                                  headers=user_headers)
        instance_id = order.json()["id"]
        await wait_status(client, instance_id, user_headers, "running")
        for _ in range(rounds):
            for action, expected in (("suspend", "stopped"), ("unsuspend", "running")):
                started = time.perf_counter()
                await client.post(f"/v1/admin/accounts/{account_id}/{action}", json={"reason": "admin"},
                                  headers=user_headers)
                await wait_status(client, instance_id, user_headers, expected)
                results.append((action, time.perf_counter() - started))
    return results


async def wait_status(client: httpx.AsyncClient, instance_id: str, headers: dict, status: str, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        body = (await client.get(f"/v1/instances/{instance_id}", headers=headers)).json()
        if body["status"] == status:
            return
        await asyncio.sleep(0.005)  # polling the observed status, bounded by the deadline
    raise TimeoutError(f"instance never reached {status}")


def bench_settings(data_dir: Path, **more: Any) -> Settings:
    """A bench's server: its data in `data_dir`, the embedded PostgreSQL (or DATABASE_URL), fresh keys, cheap
    password hashing and no sign-in rate limit (the load is the bench's own)."""
    return Settings(
        data_dir=data_dir, database_url=os.environ.get("DATABASE_URL") or None,
        secret_keys=Fernet.generate_key().decode(), jwt_secret=uuid.uuid4().hex,
        password_hash_time_cost=1, password_hash_memory_kib=1024, password_hash_parallelism=1,
        auth_rate_limit="100000/minute", **more,
    )


async def main(count: int, rounds: int) -> None:
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="jushostit-bench-", dir="/tmp") as tmp:
        settings = bench_settings(Path(tmp))
        async with open_container(settings) as container:
            without, with_instance = await make_accounts(container, count, with_instance=count // 2)
            runtime = InMemoryRuntime()
            c = container
            everyone = sorted(without + with_instance)
            for at in range(0, len(everyone), RESYNC_CHUNK):  # converge once: instances start, secrets filled in
                await service.reconcile_batch(c.database, c.settings, c.secret_box, runtime,
                                              everyone[at:at + RESYNC_CHUNK], deadline_horizon=timedelta(0))
            select_one = await time_select_one(container, 2000)
            bare = await time_noop_resync(container, sorted(without), runtime)
            busy = await time_noop_resync(container, sorted(with_instance), runtime)
            per_job = await time_job_path(container, sorted(without)[:200], runtime)
            worker = asyncio.create_task(run_worker(settings))  # exactly as serve runs it
            try:
                actions = await time_admin_action(container, settings, rounds)
            finally:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
                await local_driver(settings).shutdown()
    print(f"SELECT 1 round trip:                         {select_one * 1000:8.3f} ms")
    for label, figure in ((f"{len(without)} accounts without instances", bare),
                          (f"{len(with_instance)} accounts with one running instance", busy)):
        print(f"no-op resync, {label}: {figure.per_account_ms:7.3f} ms per account "
              f"({figure.per_account_ms / (select_one * 1000):.1f}x SELECT 1), "
              f"{figure.statements_per_account:.3f} statements per account, {figure.decrypted} secrets decrypted, "
              f"{figure.writes} runtime writes")
    print(f"one account's reconcile job body (no-op):    {per_job * 1000:8.3f} ms (fact changes take this path)")
    for action in ("suspend", "unsuspend"):
        times = [t for a, t in actions if a == action]
        print(f"admin {action:9s} → observed status: median {statistics.median(times) * 1000:7.1f} ms, "
              f"max {max(times) * 1000:7.1f} ms over {len(times)}")


# --- HTTP figures (--http): the authenticated read and the local router, each next to its baseline ------------
# A real uvicorn server on loopback (in this process, as `serve` runs it) and an external load generator: `wrk`
# when installed, else an httpx load generator in a child process (never on the server's event loop).

HTTP_CLIENTS = 20


@dataclass
class LoadFigure:
    label: str
    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: int

    def line(self) -> str:
        return (f"  {self.label:44s} {self.per_second:8.0f} req/s   p50 {self.p50_ms:7.2f} ms   "
                f"p99 {self.p99_ms:7.2f} ms   ({self.requests} requests, {self.errors} errors)")


def _wrk_ms(value: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60_000.0)):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


async def _run_wrk(url: str, headers: dict[str, str], seconds: float, clients: int) -> tuple[int, float, float, float, int]:
    arguments = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in headers.items():
        arguments += ["-H", f"{name}: {value}"]
    process = await asyncio.create_subprocess_exec(*arguments, url, stdout=asyncio.subprocess.PIPE)
    out = (await process.communicate())[0].decode()
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _wrk_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _wrk_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return requests, rate, p50, p99, errors


async def concurrent_load(
    clients: int, requests: int, send: Callable[[httpx.AsyncClient, int], Awaitable[bool]], headers: dict[str, str]
) -> tuple[int, float, float, float, int]:
    """`requests` calls of `send(client, n)` (True when the answer was right) from `clients` concurrent tasks:
    (requests, rate per second, p50 ms, p99 ms, errors)."""
    latencies: list[float] = []
    errors = 0
    numbers = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=30) as client:

        async def one_client() -> None:
            nonlocal errors
            for number in numbers:
                started = time.perf_counter()
                try:
                    errors += not await send(client, number)
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return (len(latencies), len(latencies) / elapsed, latencies[len(latencies) // 2] * 1000,
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, errors)


async def httpx_load(url: str, headers: dict[str, str], requests: int, clients: int) -> tuple[int, float, float, float, int]:
    """The fallback load generator (run in a child process): `requests` GETs from `clients` concurrent tasks."""

    async def get(client: httpx.AsyncClient, number: int) -> bool:
        return (await client.get(url)).status_code < 400

    return await concurrent_load(clients, requests, get, headers)


async def load(label: str, url: str, headers: dict[str, str], seconds: float, clients: int) -> LoadFigure:
    if shutil.which("wrk"):
        result = await _run_wrk(url, headers, seconds, clients)
    else:
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--load-url", url, "--load-headers", json.dumps(headers),
            "--load-requests", str(int(seconds * 400)), "--clients", str(clients), stdout=asyncio.subprocess.PIPE,
        )
        result = tuple(json.loads((await process.communicate())[0]))
    return LoadFigure(label, *result)


async def side_by_side(pairs: list[tuple[str, str, dict[str, str]]], seconds: float, clients: int) -> list[LoadFigure]:
    """Each (label, url, headers) warmed up, then measured twice in alternation; the better run of each kept."""
    for _, url, headers in pairs:
        await load("warm-up", url, headers, 1, clients)
    runs: dict[str, list[LoadFigure]] = {label: [] for label, _, _ in pairs}
    for _ in range(2):
        for label, url, headers in pairs:
            runs[label].append(await load(label, url, headers, seconds, clients))
    return [max(runs[label], key=lambda figure: figure.per_second) for label, _, _ in pairs]


@dataclass
class QueryCount:
    statements: int = 0
    transactions: int = 0
    pings: int = 0

    @property
    def round_trips(self) -> float:
        return self.statements + 2 * self.transactions + self.pings  # BEGIN and COMMIT are one each


@contextlib.contextmanager
def counting_queries(engine) -> Iterator[QueryCount]:
    """SQL statements, transactions (BEGIN … COMMIT, outside autocommit) and connection pings (the pool's, sent
    on the DBAPI connection, unseen by statement events) on the engine, while the block runs."""
    count = QueryCount()
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect
    ping = dialect.do_ping

    def counted_ping(dbapi_connection) -> bool:
        count.pings += 1
        return ping(dbapi_connection)

    def on_statement(*_: object) -> None:
        count.statements += 1

    def on_begin(connection) -> None:
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            count.transactions += 1

    listeners = [(sync_engine, "before_cursor_execute", on_statement), (sync_engine, "begin", on_begin)]
    for target, name, listener in listeners:
        event.listen(target, name, listener)
    dialect.do_ping = counted_ping  # an instrument for the figure only
    try:
        yield count
    finally:
        del dialect.do_ping
        for target, name, listener in listeners:
            event.remove(target, name, listener)


async def queries_per_request(container, client: httpx.AsyncClient, path: str, headers: dict[str, str],
                              rounds: int = 50) -> QueryCount:
    await client.get(path, headers=headers)  # any once-a-minute write (an API key's last use) happens here
    with counting_queries(container.database.engine) as count:
        for _ in range(rounds):
            response = await client.get(path, headers=headers)
            assert response.status_code == 200, response.text
    return QueryCount(*(round(value / rounds, 2) for value in (count.statements, count.transactions, count.pings)))


@contextlib.asynccontextmanager
async def uvicorn_server(app, port: int) -> AsyncIterator[None]:
    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    server = Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                   lifespan="on", server_header=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
        await asyncio.sleep(0.01)  # waiting for the server to bind, bounded by its own startup
    try:
        yield
    finally:
        server.should_exit = True
        await task


async def http_figures(seconds: float, clients: int) -> None:
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="jushostit-bench-", dir="/tmp") as tmp:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        settings = bench_settings(Path(tmp), port=port, access_token_ttl_seconds=3600)
        driver = local_driver(settings)
        async with open_container(settings) as container:
            app = create_app(settings, container)
            try:
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
                    user_headers, account_id = await bench_user(client, container)
                    key = (await client.post("/v1/me/api-keys", json={"name": "bench", "scopes": ["instances:read"]},
                                             headers=user_headers)).json()["key"]
                    key_headers = {"Authorization": f"Bearer {key}"}
                    await client.post(f"/v1/accounts/{account_id}/checkout", json={"plan": "free"}, headers=user_headers)
                    instance = (await client.post(f"/v1/accounts/{account_id}/instances",
                                                  json={"template": "static-site", "name": "bench"},
                                                  headers=user_headers)).json()
                    deadline = time.monotonic() + 30
                    while True:  # a starting instance is probed again by the next pass (the reconciler's follow-up)
                        observed = await service.reconcile_account(container.database, container.settings,
                                                                   container.secret_box, driver, uuid.UUID(account_id))
                        if observed is not None and observed.instances[uuid.UUID(instance["id"])].status == "running":
                            break
                        assert time.monotonic() < deadline, "the bench instance never became healthy"
                        await asyncio.sleep(0.1)  # waiting for the instance's process to listen, bounded above
                    path = f"/v1/instances/{instance['id']}"
                    session_queries = await queries_per_request(container, client, path, user_headers)
                    key_queries = await queries_per_request(container, client, path, key_headers)
                upstream = driver.port_of(uuid.UUID(account_id), uuid.UUID(instance["id"]))
                base = f"http://127.0.0.1:{port}"
                async with uvicorn_server(app, port):
                    reads = await side_by_side([
                        ("GET /healthz", f"{base}/healthz", {}),
                        ("GET /v1/instances/{id} (session bearer)", f"{base}{path}", user_headers),
                        ("GET /v1/instances/{id} (API key bearer)", f"{base}{path}", key_headers),
                    ], seconds, clients)
                    routed = await side_by_side([
                        ("upstream directly (127.0.0.1:<port>/)", f"http://127.0.0.1:{upstream}/", {}),
                        ("through the local router (<slug>.localhost)", f"{base}/",
                         {"Host": f"{instance['slug']}.localhost:{port}"}),
                    ], seconds, clients)
            finally:
                await driver.shutdown()
    generator = "wrk" if shutil.which("wrk") else "httpx (child process)"
    print(f"authenticated read vs /healthz, {clients} clients, {generator}, uvicorn on loopback:")
    for figure in reads:
        print(figure.line())
    print(f"  read / healthz: session {reads[1].per_second / reads[0].per_second:5.2f}, "
          f"API key {reads[2].per_second / reads[0].per_second:5.2f}")
    for label, count in (("session", session_queries), ("API key", key_queries)):
        print(f"  per read ({label}): {count.statements} SQL statements, {count.transactions} transactions "
              f"(BEGIN/COMMIT), {count.pings} pings: {count.round_trips:.2f} round trips")
    print(f"local router vs its upstream, {clients} clients, {generator}:")
    for figure in routed:
        print(figure.line())
    print(f"  router / direct: {routed[1].per_second / routed[0].per_second:5.2f} (goal ≥ 0.5)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--http", action="store_true",
                        help="the HTTP figures instead: authenticated read vs /healthz, local router vs direct")
    parser.add_argument("--http-seconds", type=float, default=5.0, help="length of each measured HTTP run")
    parser.add_argument("--clients", type=int, default=HTTP_CLIENTS)
    parser.add_argument("--load-url", help=argparse.SUPPRESS)  # the httpx load generator's child process
    parser.add_argument("--load-headers", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--load-requests", type=int, default=2000, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.load_url:
        print(json.dumps(asyncio.run(httpx_load(arguments.load_url, json.loads(arguments.load_headers),
                                                arguments.load_requests, arguments.clients))))
    elif arguments.http:
        asyncio.run(http_figures(arguments.http_seconds, arguments.clients))
    else:
        asyncio.run(main(arguments.accounts, arguments.rounds))
