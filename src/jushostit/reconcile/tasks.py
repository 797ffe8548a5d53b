"""Reconcile jobs: one account (deferred after every fact change), and the periodic resync of every account
that heals lost defers, crashes mid-apply and hand-made changes behind our back."""

from __future__ import annotations

import uuid

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued

from jushostit.kit import container
from jushostit.kit.jobs import app
from jushostit.reconcile import service
from jushostit.reconcile.repository import ReconcileRepository
from jushostit.reconcile.trigger import RECONCILE_TASK, queueing_lock, running_lock
from jushostit.runtime.registry import driver_for

RESYNC_BATCH = 500


@app.task(
    name=RECONCILE_TASK,
    queue="reconcile",
    retry=procrastinate.RetryStrategy(max_attempts=10, exponential_wait=2),
    pass_context=False,
)
async def reconcile(account_id: str) -> None:
    c = container.current()
    await service.reconcile_account(c.database, c.settings, c.secret_box, driver_for(c.settings), uuid.UUID(account_id))


async def defer_reconcile(account_id: uuid.UUID) -> bool:
    """Queue a reconcile now (outside any request); False when one is already queued."""
    try:
        await app.configure_task(
            RECONCILE_TASK, queueing_lock=queueing_lock(account_id), lock=running_lock(account_id)
        ).defer_async(account_id=str(account_id))
    except AlreadyEnqueued:
        return False
    return True


async def resync_all() -> tuple[int, int]:
    """Reconcile every account, a batch at a time, in this job (not one job per account: the queue's own cost
    per job would dwarf a no-op pass). Returns (accounts reconciled, driver writes)."""
    c = container.current()
    driver = driver_for(c.settings)
    reconciled = writes = 0
    after = None
    while True:
        async with c.database.reader() as session:
            ids = await ReconcileRepository(session).account_ids(after=after, limit=RESYNC_BATCH)
        if not ids:
            return reconciled, writes
        done, written = await service.reconcile_batch(c.database, c.settings, c.secret_box, driver, ids)
        reconciled, writes, after = reconciled + done, writes + written, ids[-1]


@app.task(name="account.resync", queue="reconcile", queueing_lock="account.resync", lock="account.resync",
          pass_context=False)
async def resync(timestamp: int | None = None) -> None:
    await resync_all()


def resync_cron(interval_seconds: int) -> str:
    """A cron expression for the resync interval (procrastinate takes a sixth, seconds, field)."""
    if interval_seconds < 60:
        return f"* * * * * */{interval_seconds}"
    return f"*/{max(1, interval_seconds // 60)} * * * *"


def schedule_resync(interval_seconds: int) -> None:
    app.periodic(cron=resync_cron(interval_seconds), periodic_id="account.resync")(resync)
