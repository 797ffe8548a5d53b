"""Housekeeping: expired magic links, refresh tokens and stale sign-in throttles are purged daily."""

from __future__ import annotations

from datetime import timedelta

from jushostit import container
from jushostit.auth.repository import AuthRepository
from jushostit.kit.db import utcnow
from jushostit.kit.jobs import app

KEEP_EXPIRED_FOR = timedelta(days=7)


@app.periodic(cron="17 3 * * *", periodic_id="auth.purge_expired")
@app.task(name="auth.purge_expired", queueing_lock="auth.purge_expired", pass_context=False)
async def purge_expired(timestamp: int) -> None:
    async with container.current().database.unit_of_work() as session:
        now = utcnow()
        await AuthRepository(session).purge_expired(now, now - KEEP_EXPIRED_FOR)
