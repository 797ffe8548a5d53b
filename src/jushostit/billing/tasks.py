"""Billing housekeeping: Idempotency-Key records are kept a week (a retry that late is a new request)."""

from __future__ import annotations

from datetime import timedelta

from jushostit import container
from jushostit.idempotency import IdempotencyRepository
from jushostit.kit.db import utcnow
from jushostit.kit.jobs import app

KEEP_IDEMPOTENCY_KEYS_FOR = timedelta(days=7)


@app.periodic(cron="41 3 * * *", periodic_id="idempotency.purge")
@app.task(name="idempotency.purge", queueing_lock="idempotency.purge", pass_context=False)
async def purge_idempotency_keys(timestamp: int | None = None) -> int:
    async with container.current().database.unit_of_work() as session:
        return await IdempotencyRepository(session).purge(utcnow() - KEEP_IDEMPOTENCY_KEYS_FOR)
