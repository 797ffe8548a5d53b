"""The job path and the resync path share one advisory lock per account."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import timedelta

import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from jushostit.kit import jobs
from jushostit.reconcile import service, tasks
from jushostit.reconcile.repository import ReconcileLocks
from jushostit.reconcile.tasks import RESYNC_TASK, defer_reconcile, resync_all
from jushostit.runtime.local.driver import LocalDriver
from jushostit.runtime.protocol import AccountState, Observed
from jushostit.triggers import RECONCILE_TASK
from tests.live import Live, eventually, processes_in
from tests.reconcile.test_healing import RecordsAccounts


async def test_a_held_account_is_skipped_by_the_batch_and_free_again_after(container) -> None:
    held, free = uuid.uuid4(), uuid.uuid4()
    async with container.database.autocommit.connect() as job, container.database.autocommit.connect() as resync:
        assert await ReconcileLocks(job).try_lock(held)  # a reconcile job is running for `held`
        assert await ReconcileLocks(resync).try_many([held, free]) == [free]
        await ReconcileLocks(resync).release_all()
        await ReconcileLocks(job).release_all()
        assert sorted(await ReconcileLocks(resync).try_many([held, free])) == sorted([held, free])
        await ReconcileLocks(resync).release_all()


async def test_a_finished_resync_leaves_the_resync_lock_free_for_the_next_one(live: Live) -> None:
    assert await resync_all() is not None
    # Asked on a connection of its own: the pool may hand back the very connection the resync used, on which
    # the (re-entrant) lock would be granted even if it were still held.
    engine = create_async_engine(live.container.database.engine.url, poolclass=NullPool)
    try:
        async with engine.connect() as other:
            locks = ReconcileLocks(other)
            assert await locks.try_singleton(RESYNC_TASK), "a resync left its lock on a pooled connection"
            await locks.release_all()
    finally:
        await engine.dispose()
    assert await resync_all() is not None


class ProbesWhileApplying:
    """The real local driver; while it applies `account`, it asks whether `other`'s lock is free, on a
    connection of its own (as another worker would)."""

    def __init__(self, inner: LocalDriver, url: object, account: uuid.UUID, other: uuid.UUID) -> None:
        self.inner, self.url, self.account, self.other = inner, url, account, other
        self.other_free: list[bool] = []

    async def apply(self, desired: AccountState) -> Observed:
        if desired.account_id == self.account:
            engine = create_async_engine(self.url, poolclass=NullPool)
            try:
                async with engine.connect() as connection:
                    locks = ReconcileLocks(connection)
                    self.other_free.append(await locks.try_lock(self.other))
                    await locks.release_all()
            finally:
                await engine.dispose()
        return await self.inner.apply(desired)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_the_resync_holds_the_locks_of_one_chunk_at_a_time(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = await live.signup("Chunk One"), await live.signup("Chunk Two")  # ids in that order
    driver = ProbesWhileApplying(live.driver, live.container.database.engine.url, uuid.UUID(second.account_id),
                                 uuid.UUID(first.account_id))
    monkeypatch.setattr(tasks, "driver_for", lambda settings, database, box: driver)
    monkeypatch.setattr(tasks, "RESYNC_CHUNK", 1)

    assert await resync_all() is not None

    # While the second chunk is applied, the first one's account is free for its own reconcile jobs.
    assert driver.other_free == [True]


async def test_the_resync_skips_an_account_a_job_holds_and_counts_what_it_applied(live: Live) -> None:
    owners = [await live.signup(f"Batch {n}") for n in range(3)]
    sites = []
    for owner in owners:
        await live.checkout(owner, "free")
        sites.append(await live.ordered(owner, "batched"))
    await live.work()
    victims = []
    for owner, site in zip(owners, sites, strict=True):
        await live.until_status(owner, site["id"], "running")
        [process] = processes_in(live.data_dir(site))
        os.killpg(process.pid, signal.SIGKILL)  # behind our back: each account needs one start
        victims.append(process)

    def all_dead() -> bool:
        return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in victims)

    await eventually(all_dead, "the instance processes to die")
    c = live.container
    ids = [uuid.UUID(o.account_id) for o in owners]
    async with c.database.autocommit.connect() as job:  # a reconcile job is applying the first account
        locks = ReconcileLocks(job)
        assert await locks.try_lock(ids[0])
        try:
            result = await service.reconcile_batch(c.database, c.settings, c.secret_box, live.driver, ids,
                                                   deadline_horizon=timedelta(0))
        finally:
            await locks.release_all()

    assert result == (2, 2)  # two accounts applied, one process started in each
    assert processes_in(live.data_dir(sites[0])) == []  # left to the job that holds it
    assert all(len(processes_in(live.data_dir(site))) == 1 for site in sites[1:])


async def test_a_reconcile_that_finds_the_account_held_runs_again_once_it_is_free(live: Live) -> None:
    owner = await live.signup("Busy Co")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "busy")
    await live.work()
    await live.until_status(owner, site["id"], "running")
    [victim] = processes_in(live.data_dir(site))
    os.killpg(victim.pid, signal.SIGKILL)
    await eventually(lambda: not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE,
                     "the instance process to die")
    c, account_id = live.container, uuid.UUID(owner.account_id)

    async with c.database.autocommit.connect() as job:  # another pass holds the account
        locks = ReconcileLocks(job)
        assert await locks.try_lock(account_id)
        try:
            assert await live.reconcile(account_id) is None  # neither applied nor waited for
        finally:
            await locks.release_all()

    assert processes_in(live.data_dir(site)) == []
    async with c.database.engine.connect() as connection:
        queued = (await connection.execute(text(
            "SELECT queueing_lock FROM procrastinate_jobs WHERE status = 'todo' AND args->>'account_id' = :id"
        ), {"id": owner.account_id})).scalars().all()
    assert f"reconcile-busy:{account_id}" in queued  # one more pass, after the one holding it
    await live.work()
    [revived] = processes_in(live.data_dir(site))
    assert revived.pid != victim.pid and (await live.page(site["slug"])).status_code == 200


async def test_a_reconcile_queued_outside_a_request_waits_once_per_account(live: Live) -> None:
    first, second = await live.signup("Queued Once"), await live.signup("Queued Too")
    await live.work()  # nothing of theirs waits
    a, b = uuid.UUID(first.account_id), uuid.UUID(second.account_id)

    assert await defer_reconcile(a) is True
    assert await defer_reconcile(a) is False  # one already waits, and will read the facts when it runs
    assert await defer_reconcile(b) is True  # another account's is not folded into it

    assert [job.queueing_lock for job in await live.jobs_of(first.account_id, "todo")] == [f"reconcile:{a}"]
    assert [job.queueing_lock for job in await live.jobs_of(second.account_id, "todo")] == [f"reconcile:{b}"]


async def test_a_reconcile_queued_outside_a_request_goes_before_plain_work_queued_earlier(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, urgent = await live.signup("Plain Work"), await live.signup("Restarted Instance")
    await live.work()
    driver = RecordsAccounts(live.driver)
    monkeypatch.setattr(tasks, "driver_for", lambda settings, database, box: driver)
    ids = [uuid.UUID(plain.account_id), uuid.UUID(urgent.account_id)]

    await jobs.app.configure_task(RECONCILE_TASK).defer_async(account_id=plain.account_id)  # default priority
    assert await defer_reconcile(ids[1])  # as a restart or the retention purge queues it, later
    await live.work(concurrency=1)

    assert [a for a in driver.applied if a in ids] == [ids[1], ids[0]]
