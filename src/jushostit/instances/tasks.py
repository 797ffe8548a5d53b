"""Instance jobs: restart (through the runtime, then a reconcile) and the daily retention purge."""

from __future__ import annotations

import uuid
from datetime import timedelta

from jushostit import container
from jushostit.instances.repository import InstanceRepository
from jushostit.instances.service import RESTART_TASK, send_expiry_notices
from jushostit.kit.db import utcnow
from jushostit.kit.jobs import app
from jushostit.reconcile.repository import ReconcileLocks
from jushostit.reconcile.tasks import defer_reconcile
from jushostit.runtime.registry import driver_for

RESTART_BUSY_RETRY_SECONDS = 1


@app.task(name=RESTART_TASK, queue="reconcile", pass_context=False)
async def restart(instance_id: str, account_id: str) -> None:
    c = container.current()
    async with c.database.autocommit.connect() as connection:
        locks = ReconcileLocks(connection)
        if not await locks.try_lock(uuid.UUID(account_id)):  # never in the middle of an apply of this account
            await app.configure_task(RESTART_TASK, schedule_in={"seconds": RESTART_BUSY_RETRY_SECONDS}).defer_async(
                instance_id=instance_id, account_id=account_id
            )
            return
        try:
            await driver_for(c.settings, c.database, c.secret_box).restart(uuid.UUID(instance_id))
        finally:
            await locks.release_all()
    await defer_reconcile(uuid.UUID(account_id))  # the reconcile starts it again


@app.periodic(cron="23 4 * * *", periodic_id="instances.purge_expired")
@app.task(name="instances.purge_expired", queue="reconcile", queueing_lock="instances.purge_expired", pass_context=False)
async def purge_expired(timestamp: int | None = None) -> int:
    """Expired instances past the retention period: their next reconcile sees level `deleted` and removes them."""
    c = container.current()
    cutoff = utcnow() - timedelta(days=c.settings.expired_retention_days)
    async with c.database.sessionmaker() as session:
        accounts = await InstanceRepository(session).accounts_with_expired_before(cutoff)
    for account_id in accounts:
        await defer_reconcile(account_id)
    return len(accounts)


@app.periodic(cron="7 * * * *", periodic_id="instances.expiry_notices")
@app.task(name="instances.expiry_notices", queue="email", queueing_lock="instances.expiry_notices", pass_context=False)
async def expiry_notices(timestamp: int | None = None) -> int:
    c = container.current()
    async with c.database.unit_of_work() as session:
        return await send_expiry_notices(session, c.settings, now=utcnow())
