"""Reconciler benchmark, everything measured side by side in one run on one database.

1. The cost of a no-op full resync per account (1,000 accounts, each entitled and already converged) next to
   the cost of one bare `SELECT 1` round trip on the same database. Goal: under 2 ms per account. The resync
   is the periodic job's body (`resync_all`: batches of 500 accounts, facts read in a few queries per batch).
   Also printed: one account through the reconcile job's body, the path a fact change takes.
2. The time from an admin action (suspend / unsuspend) to the observed status change of a running
   static-site instance, with a real worker in the same process.

Run: .venv/bin/python bench/reconcile_bench.py [--accounts 1000]  (embedded PostgreSQL in a temp dir, or
DATABASE_URL when set).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from jushostit.app import create_app
from jushostit.config import Settings
from jushostit.kit.container import open_container
from jushostit.kit.db import utcnow
from jushostit.kit.logging import configure_logging
from jushostit.models import Account, AccountStatus, Plan, Subscription, User
from jushostit.reconcile import service
from jushostit.reconcile.tasks import resync_all
from jushostit.runtime.registry import driver_for
from jushostit.server import run_worker


async def make_accounts(container, count: int) -> list[uuid.UUID]:
    now = utcnow()
    ids = []
    async with container.database.unit_of_work() as session:
        free = await session.scalar(select(Plan).where(Plan.code == "free"))
        for i in range(count):
            account = Account(name=f"bench-{i}", status=AccountStatus.active, suspension_reasons=[])
            session.add(account)
            await session.flush()
            session.add(Subscription(account_id=account.id, plan_id=free.id, provider="manual", status="active",
                                     current_period_start=now, current_period_end=now + timedelta(days=30)))
            ids.append(account.id)
    return ids


async def time_select_one(container, rounds: int) -> float:
    async with container.database.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
        started = time.perf_counter()
        for _ in range(rounds):
            await connection.execute(text("SELECT 1"))
        return (time.perf_counter() - started) / rounds


async def time_noop_resync(container, count: int) -> tuple[float, float]:
    """(per account in the periodic resync, per account through the single-account job path), both no-op."""
    await resync_all()  # converge once; the timed passes below have nothing to do
    started = time.perf_counter()
    reconciled, writes = await resync_all()
    per_account = (time.perf_counter() - started) / reconciled
    assert reconciled >= count and writes == 0, f"a no-op resync made {writes} driver writes"
    driver = driver_for(container.settings)
    sample = (await ids_of(container))[:200]
    started = time.perf_counter()
    for account_id in sample:
        observed = await service.reconcile_account(
            container.database, container.settings, container.secret_box, driver, account_id
        )
        assert observed is not None and observed.writes == 0
    return per_account, (time.perf_counter() - started) / len(sample)


async def ids_of(container) -> list[uuid.UUID]:
    async with container.database.reader() as session:
        return list((await session.scalars(select(Account.id).order_by(Account.id))).all())


async def time_admin_action(container, settings: Settings, rounds: int) -> list[tuple[str, float]]:
    app = create_app(settings, container)
    transport = httpx.ASGITransport(app=app)
    results = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        password = "bench passphrase " + uuid.uuid4().hex
        signup = (await client.post("/v1/auth/signup", json={"email": f"b{uuid.uuid4().hex[:8]}@example.com",
                                                             "password": password, "account_name": "Bench"})).json()
        user_headers = {"Authorization": f"Bearer {signup['access_token']}"}
        account_id = signup["account"]["id"]
        async with container.database.unit_of_work() as session:
            user = await session.get(User, uuid.UUID(signup["user"]["id"]))
            user.is_platform_admin = True
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


async def main(count: int, rounds: int) -> None:
    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="jushostit-bench-", dir="/tmp") as tmp:
        settings = Settings(
            data_dir=Path(tmp), database_url=os.environ.get("DATABASE_URL") or None,
            secret_keys=Fernet.generate_key().decode(), jwt_secret=uuid.uuid4().hex,
            password_hash_time_cost=1, password_hash_memory_kib=1024, password_hash_parallelism=1,
            auth_rate_limit="100000/minute",
        )
        async with open_container(settings) as container:
            ids = await make_accounts(container, count)
            select_one = await time_select_one(container, 2000)
            per_account, per_job = await time_noop_resync(container, len(ids))
            worker = asyncio.create_task(run_worker(settings))  # exactly as serve runs it
            try:
                actions = await time_admin_action(container, settings, rounds)
            finally:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
                await driver_for(settings).shutdown()
    print(f"no-op resync, {count} accounts:   {per_account * 1000:8.3f} ms per account (goal < 2 ms)")
    print(f"SELECT 1 round trip:               {select_one * 1000:8.3f} ms")
    print(f"ratio resync-per-account / SELECT 1: {per_account / select_one:6.1f}x")
    print(f"one account's reconcile job body:  {per_job * 1000:8.3f} ms (fact changes take this path)")
    for action in ("suspend", "unsuspend"):
        times = [t for a, t in actions if a == action]
        print(f"admin {action:9s} → observed status: median {statistics.median(times) * 1000:7.1f} ms, "
              f"max {max(times) * 1000:7.1f} ms over {len(times)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.accounts, arguments.rounds))
