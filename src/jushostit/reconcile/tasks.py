"""Reconcile jobs: one account (deferred after every fact change), and the periodic resync of every account
that heals lost defers, crashes mid-apply and hand-made changes behind our back.

Neither carries a procrastinate `lock`: a killed worker's job would hold it until recovered. Advisory locks,
tried on the job's own connection, end with the worker (see jushostit.triggers)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from procrastinate.exceptions import AlreadyEnqueued

from jushostit import container
from jushostit.kit.jobs import app, interval_cron
from jushostit.reconcile import service
from jushostit.reconcile.repository import ReconcileLocks, ReconcileRepository
from jushostit.runtime.registry import driver_for
from jushostit.triggers import FACT_CHANGE_PRIORITY, RECONCILE_TASK, queueing_lock

# Accounts per resync chunk: locked, read and applied together; each chunk costs a fixed few queries, and its
# locks are held only while that chunk is applied.
RESYNC_CHUNK = 100
RESYNC_TASK = "account.resync"


@app.task(name=RECONCILE_TASK, queue="reconcile", pass_context=False)
async def reconcile(account_id: str) -> None:
    """Retries are the reconciler's own (triggers.retry_after_failure), on a queueing lock of their own, so a
    waiting retry never swallows a new fact change."""
    c = container.current()
    await service.reconcile_account(c.database, c.settings, c.secret_box,
                                    driver_for(c.settings, c.database, c.secret_box), uuid.UUID(account_id))


async def defer_reconcile(account_id: uuid.UUID) -> bool:
    """Queue a reconcile now (outside any request); False when one is already queued (it will see the facts)."""
    try:
        await app.configure_task(
            RECONCILE_TASK, queueing_lock=queueing_lock(account_id), priority=FACT_CHANGE_PRIORITY
        ).defer_async(account_id=str(account_id))
    except AlreadyEnqueued:
        return False
    return True


async def resync_all() -> tuple[int, int] | None:
    """Reconcile every account, a chunk at a time, in this job (not one job per account: the queue's own cost
    per job would dwarf a no-op pass). Returns (accounts reconciled, driver writes), or None when another
    resync is running."""
    c = container.current()
    driver = driver_for(c.settings, c.database, c.secret_box)
    # Deadlines within two resync intervals get an exact job; the resyncs before them schedule the rest.
    horizon = timedelta(seconds=2 * c.settings.resync_interval_seconds)
    async with c.database.autocommit.connect() as singleton:
        locks = ReconcileLocks(singleton)
        if not await locks.try_singleton(RESYNC_TASK):
            return None
        try:
            reconciled = writes = 0
            after = None
            while True:
                async with c.database.reader() as session:
                    ids = await ReconcileRepository(session).account_ids(after=after, limit=RESYNC_CHUNK)
                if not ids:
                    return reconciled, writes
                done, written = await service.reconcile_batch(
                    c.database, c.settings, c.secret_box, driver, ids, deadline_horizon=horizon
                )
                reconciled, writes, after = reconciled + done, writes + written, ids[-1]
        finally:
            # The connection goes back to the pool, not away: a lock left on it would make every later resync
            # that checks out another connection return None.
            await locks.release_all()


@app.task(name=RESYNC_TASK, queue="reconcile", queueing_lock=RESYNC_TASK, pass_context=False)
async def resync(timestamp: int | None = None) -> None:
    await resync_all()


def schedule_resync(interval_seconds: int) -> None:
    """Register the periodic resync (once per process: its interval is fixed at start)."""
    if (RESYNC_TASK, RESYNC_TASK) not in app.periodic_registry.periodic_tasks:
        app.periodic(cron=interval_cron(interval_seconds), periodic_id=RESYNC_TASK)(resync)
