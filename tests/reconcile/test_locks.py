"""The job path and the resync path share one advisory lock per account."""

from __future__ import annotations

import uuid

from jushostit.reconcile.repository import ReconcileLocks


async def test_a_held_account_is_skipped_by_the_batch_and_free_again_after(container) -> None:
    held, free = uuid.uuid4(), uuid.uuid4()
    async with container.database.autocommit.connect() as job, container.database.autocommit.connect() as resync:
        assert await ReconcileLocks(job).try_lock(held)  # a reconcile job is running for `held`
        assert await ReconcileLocks(resync).try_many([held, free]) == [free]
        await ReconcileLocks(resync).release_all()
        await ReconcileLocks(job).release_all()
        assert sorted(await ReconcileLocks(resync).try_many([held, free])) == sorted([held, free])
        await ReconcileLocks(resync).release_all()
