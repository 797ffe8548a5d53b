"""Two workers never reconcile one account at once (procrastinate `lock` per account), while accounts are
reconciled in parallel; a fact arriving during a reconcile queues exactly one more, which converges."""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections import defaultdict

import pytest

from jushostit.kit import jobs
from jushostit.reconcile import tasks
from jushostit.reconcile.tasks import defer_reconcile
from jushostit.reconcile.trigger import RECONCILE_TASK, running_lock
from jushostit.runtime.local.driver import LocalDriver
from jushostit.runtime.protocol import AccountState, Observed
from tests.live import Live, processes_in

APPLY_SECONDS = 0.3  # the fault hook: a slow apply widens the window a race would need
worker_name: contextvars.ContextVar[str] = contextvars.ContextVar("worker_name", default="?")


class SlowRecordingDriver:
    """The real local driver, each apply recorded as (worker, start, end) per account and made slow."""

    def __init__(self, inner: LocalDriver) -> None:
        self.inner = inner
        self.intervals: dict[uuid.UUID, list[tuple[str, float, float]]] = defaultdict(list)
        self.first_start: dict[uuid.UUID, asyncio.Event] = defaultdict(asyncio.Event)

    async def apply(self, desired: AccountState) -> Observed:
        start = time.monotonic()
        self.first_start[desired.account_id].set()
        try:
            await asyncio.sleep(APPLY_SECONDS)
            return await self.inner.apply(desired)
        finally:
            self.intervals[desired.account_id].append((worker_name.get(), start, time.monotonic()))

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_two_workers_never_reconcile_one_account_at_once(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    owners = [await live.signup("Race X"), await live.signup("Race Y")]
    instances = []
    for owner in owners:
        await live.checkout(owner, "free")
        instances.append(await live.ordered(owner, "racer"))
    x, y = (uuid.UUID(o.account_id) for o in owners)
    driver = SlowRecordingDriver(live.driver)
    monkeypatch.setattr(tasks, "driver_for", lambda settings: driver)

    # Several reconciles of each account at once (lock only, so queueing_lock does not fold them into one).
    for account_id in (x, y):
        for _ in range(2):
            await jobs.app.configure_task(RECONCILE_TASK, lock=running_lock(account_id)).defer_async(
                account_id=str(account_id))
    assert len(await live.jobs_of(str(x), "todo")) == 3  # the order's and the two above

    requeued: list[bool] = []

    async def fact_during_reconcile() -> None:
        await driver.first_start[x].wait()
        requeued.append(await defer_reconcile(x))  # the running one freed the queueing lock: one more queues

    async def worker(name: str) -> None:
        worker_name.set(name)  # inherited by the job tasks this worker starts
        await live.work(name=name, concurrency=1)

    watcher = asyncio.create_task(fact_during_reconcile())
    deadline = time.monotonic() + 60
    try:
        while await live.jobs_of(str(x), "todo") or await live.jobs_of(str(y), "todo") or not watcher.done():
            # wait=False workers stop when every queued job is locked by a running one: start them again
            assert time.monotonic() < deadline, "the reconciles never drained"
            await asyncio.gather(worker("w1"), worker("w2"))
    finally:
        watcher.cancel()

    assert requeued == [True]
    for account_id, expected in ((x, 4), (y, 3)):  # the order's, the two above, and for x the fact's
        spans = sorted(driver.intervals[account_id], key=lambda s: s[1])
        assert len(spans) == expected, spans  # every job ran, none was lost
        for (_, _, end), (_, next_start, _) in zip(spans, spans[1:], strict=False):
            assert end <= next_start, f"two reconciles of {account_id} overlapped: {spans}"
    assert {w for spans in (driver.intervals[x], driver.intervals[y]) for w, _, _ in spans} == {"w1", "w2"}
    parallel = any(
        xs < ye and ys < xe for _, xs, xe in driver.intervals[x] for _, ys, ye in driver.intervals[y]
    )
    assert parallel, "the two accounts were never reconciled in parallel: the test proved nothing"

    for owner, instance in zip(owners, instances, strict=True):
        assert (await live.instance(owner, instance["id"]))["status"] == "running"
        assert len(processes_in(live.data_dir(instance))) == 1
        assert (await live.page(instance["slug"])).status_code == 200
        assert len(await live.emails_of(owner, "instance_ready")) == 1
