"""The job path and the resync path share one advisory lock per account."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from jushostit.reconcile.repository import ReconcileLocks
from jushostit.reconcile.tasks import RESYNC_TASK, resync_all
from tests.live import Live


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
