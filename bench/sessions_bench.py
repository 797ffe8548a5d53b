"""Browser session start latency, warm against on-demand, side by side in one run; and the pool's hit rate under
a burst. The browsers are real: Debian's Chromium, run by the local runtime's pools from the chromium template.

- warm / on demand: `POST /v1/accounts/{id}/sessions` through the app (authentication, the account's lock, the
  entitlement, the concurrency, the credit's debit, the browser, the commit), timed to its 201, then
  `POST /v1/sessions/{id}/end`. Warm: the pool had a browser waiting (all started beforehand and settled, with no
  refill running meanwhile); on demand: the pool keeps none warm, so each session's browser is started for it.
- burst: `--burst` takes at once from a pool of `--warm-size` warm browsers (the pools alone), and the share
  served warm.

Goals from the business (local runtime): warm under 100 ms, on demand under 500 ms. What matters most is the gap
in one run: the warm path does not start a browser.

Run: .venv/bin/python bench/sessions_bench.py [--samples 30] [--burst 10] [--warm-size 4]  (embedded PostgreSQL in a
temp dir, or DATABASE_URL when set).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx
import psutil
from sqlalchemy import select, update

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reconcile_bench import bench_settings, bench_user

from jushostit.app import create_app
from jushostit.bootstrap import open_container
from jushostit.catalog.loader import load_templates
from jushostit.catalog.spec import TemplateSpec
from jushostit.config import Settings
from jushostit.kit.logging import configure_logging
from jushostit.models import Account, BillingMode, Subscription
from jushostit.reconcile import service as reconcile
from jushostit.runtime.local.browsers import Browser, BrowserPools, PoolWanted
from jushostit.runtime.registry import browser_pools, driver_for


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def api_latencies(samples: int) -> tuple[list[float], list[float]]:
    """(warm, on demand) milliseconds per session start through the API."""
    with tempfile.TemporaryDirectory(prefix="jushostit-bench-", dir="/tmp") as tmp:
        settings = bench_settings(Path(tmp))
        async with open_container(settings) as container:
            app = create_app(settings, container)
            pools = browser_pools(settings)
            try:
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
                    return await _measure_api(client, container, settings, pools, samples)
            finally:
                await pools.shutdown()


async def _measure_api(client: httpx.AsyncClient, container, settings: Settings, pools: BrowserPools,
                       samples: int) -> tuple[list[float], list[float]]:
    headers, account_id = await bench_user(client, container, platform_admin=True)
    async with container.database.unit_of_work() as session:  # paid off-platform, as an operator sets it
        await session.execute(update(Account).where(Account.id == uuid.UUID(account_id))
                              .values(billing_mode=BillingMode.invoice))
    pending = (await client.post(f"/v1/accounts/{account_id}/checkout", json={"plan": "starter"},
                                 headers=headers)).json()["subscription"]
    await client.post(f"/v1/admin/subscriptions/{pending['id']}/mark-paid", headers=headers)
    async with container.database.unit_of_work() as session:  # sessions one after another: one at a time is enough
        subscription = await session.scalar(select(Subscription).where(Subscription.id == uuid.UUID(pending["id"])))
        subscription.quotas = {**subscription.quotas, "session_max_minutes": 10}
    granted = await client.post(f"/v1/admin/accounts/{account_id}/credits/grants",
                                json={"amount": 2 * samples, "reason": "bench"}, headers=headers)
    assert granted.status_code == 201, granted.text
    pool = (await client.post(f"/v1/accounts/{account_id}/instances", json={"template": "chromium", "name": "bench"},
                              headers=headers)).json()
    pool_id = uuid.UUID(pool["id"])
    driver = driver_for(settings, container.database, container.secret_box)
    await reconcile.reconcile_account(container.database, settings, container.secret_box, driver, uuid.UUID(account_id))

    async def one(warm: bool) -> float:
        started = time.perf_counter()
        answer = await client.post(f"/v1/accounts/{account_id}/sessions", json={}, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        assert answer.status_code == 201, answer.text
        assert answer.json()["warm"] is warm, "a warm start started a browser, or an on-demand one found one"
        await client.post(f"/v1/sessions/{answer.json()['id']}/end", headers=headers)
        return elapsed

    # Warm: every session's browser started beforehand, and settled (a browser just started keeps the CPU busy
    # for a while), with no refill running during the measurement.
    wanted = pools.wanted(pool_id)
    assert wanted is not None
    pools.want(pool_id, dataclasses.replace(wanted, warm_size=samples, max_browsers=samples + 1))
    await pools.top_up(pool_id)
    await settled(pools.browsers_of(pool_id))
    pools.want(pool_id, dataclasses.replace(wanted, warm_size=0, max_browsers=samples + 1))
    warm = [await one(True) for _ in range(samples)]
    # On demand: nothing warm, each session's browser started for it.
    cold = [await one(False) for _ in range(samples)]
    return warm, cold


async def settled(browsers: Sequence[Browser], *, quiet_percent: float = 5.0, limit: float = 60.0) -> None:
    """Until the browsers together use less than `quiet_percent` of a core over a fifth of a second."""
    processes = [psutil.Process(b.process.pid) for b in browsers]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for process in processes:
            process.cpu_percent(None)
        await asyncio.sleep(0.2)  # the window the CPU use is measured over
        if sum(p.cpu_percent(None) for p in processes) < quiet_percent:
            return


async def burst_hit_rate(burst: int, warm_size: int) -> tuple[int, int]:
    """(served warm, started) for `burst` takes at once from a pool of `warm_size` warm browsers."""
    template = next(t for t in load_templates() if t.code == "chromium")
    assert isinstance(template, TemplateSpec) and template.process is not None
    with tempfile.TemporaryDirectory() as root:
        pools = BrowserPools(Path(root))
        pool_id = uuid.uuid4()
        pools.want(pool_id, PoolWanted(tuple(template.process.command), warm_size, burst + warm_size))
        try:
            await pools.top_up(pool_id)
            taken = await asyncio.gather(*(pools.take(pool_id) for _ in range(burst)))
            for browser, _ in taken:
                await pools.discard(browser.id)
        finally:
            await pools.shutdown()
    return pools.hits, pools.misses


async def main(samples: int, burst: int, warm_size: int) -> int:
    if shutil.which("chromium") is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    configure_logging("WARNING")
    warm, cold = await api_latencies(samples)
    hits, misses = await burst_hit_rate(burst, warm_size)
    for label, timings in (("warm", warm), ("on demand", cold)):
        print(f"{label:>10}: p50 {statistics.median(timings):7.1f} ms   p99 {percentile(timings, 0.99):7.1f} ms"
              f"   ({len(timings)} sessions through the API)")
    print(f"     ratio: on demand / warm at p50 = {statistics.median(cold) / statistics.median(warm):.1f}x")
    print(f"     burst: {burst} at once on {warm_size} warm: {hits} warm, {misses} started "
          f"(hit rate {hits / burst:.0%})")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--warm-size", type=int, default=4)
    arguments = parser.parse_args()
    sys.exit(asyncio.run(main(arguments.samples, arguments.burst, arguments.warm_size)))
