"""Two workers and the resync never apply one account at once (the account's advisory lock, tried, never
waited for), while different accounts are applied in parallel; a fact arriving during a pass gets one more
pass after it, never zero."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import time
import uuid
from collections import defaultdict

import pytest

from jushostit.kit import jobs
from jushostit.reconcile import tasks
from jushostit.reconcile.tasks import defer_reconcile, resync_all
from jushostit.runtime.local.driver import LocalDriver
from jushostit.runtime.protocol import AccountState, Observed
from jushostit.triggers import RECONCILE_TASK
from tests.live import Live, processes_in

APPLY_SECONDS = 0.3  # the fault hook: a slow apply widens the window a race would need
worker_name: contextvars.ContextVar[str] = contextvars.ContextVar("worker_name", default="resync")


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


def assert_never_overlapping(spans: list[tuple[str, float, float]]) -> None:
    ordered = sorted(spans, key=lambda s: s[1])
    for (_, _, end), (_, next_start, _) in itertools.pairwise(ordered):
        assert end <= next_start, f"two passes over one account overlapped: {ordered}"


async def worker(live: Live, name: str) -> None:
    worker_name.set(name)  # inherited by the job tasks this worker starts
    await live.work(name=name, concurrency=1)


async def test_two_workers_and_the_resync_never_apply_one_account_at_once(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    owners = [await live.signup("Race X"), await live.signup("Race Y")]
    instances = []
    for owner in owners:
        await live.checkout(owner, "free")
        instances.append(await live.ordered(owner, "racer"))
    x, y = (uuid.UUID(o.account_id) for o in owners)
    driver = SlowRecordingDriver(live.driver)
    monkeypatch.setattr(tasks, "driver_for", lambda settings, database, box: driver)

    # Several reconciles of each account at once, without a queueing lock so none is folded into another.
    for account_id in (x, y):
        for _ in range(2):
            await jobs.app.configure_task(RECONCILE_TASK).defer_async(account_id=str(account_id))

    async def resync_during_a_pass() -> None:
        await driver.first_start[x].wait()
        await resync_all()

    await asyncio.gather(worker(live, "w1"), worker(live, "w2"), resync_during_a_pass())

    for account_id in (x, y):
        spans = driver.intervals[account_id]
        assert len(spans) >= 2, spans
        assert_never_overlapping(spans)
    workers = {w for spans in driver.intervals.values() for w, _, _ in spans}
    assert {"w1", "w2"} <= workers, workers
    parallel = any(
        xs < ye and ys < xe for _, xs, xe in driver.intervals[x] for _, ys, ye in driver.intervals[y]
    )
    assert parallel, "the two accounts were never applied in parallel: the test proved nothing"

    for owner, instance in zip(owners, instances, strict=True):
        assert (await live.instance(owner, instance["id"]))["status"] == "running"
        assert len(processes_in(live.data_dir(instance))) == 1
        assert (await live.page(instance["slug"])).status_code == 200
        assert len(await live.emails_of(owner, "instance_ready")) == 1


async def test_a_fact_change_during_a_pass_gets_one_more_pass_after_it(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = await live.signup("Late Fact")
    await live.checkout(owner, "free")
    await live.ordered(owner, "latecomer")
    account_id = uuid.UUID(owner.account_id)
    driver = SlowRecordingDriver(live.driver)
    monkeypatch.setattr(tasks, "driver_for", lambda settings, database, box: driver)
    queued: list[bool] = []

    async def fact_during_the_first_pass() -> None:
        await driver.first_start[account_id].wait()
        queued.append(await defer_reconcile(account_id))  # the running job freed its queueing lock

    watcher = asyncio.create_task(fact_during_the_first_pass())
    await asyncio.gather(worker(live, "w1"), worker(live, "w2"))
    await watcher

    assert queued == [True]
    spans = sorted(driver.intervals[account_id], key=lambda s: s[1])
    assert_never_overlapping(spans)
    assert any(start >= spans[0][2] for _, start, _ in spans[1:]), (
        f"no pass started after the one the fact arrived during: {spans}"
    )
