"""Billing housekeeping: Idempotency-Key records are kept a week (a retry that late is a new request); every
hour the subscriptions prepaid contracts pay are renewed a day before their period ends."""

from __future__ import annotations

from datetime import timedelta

import structlog

from jushostit import container
from jushostit.billing import service
from jushostit.billing.repository import BillingRepository
from jushostit.idempotency import IdempotencyRepository
from jushostit.kit.db import utcnow
from jushostit.kit.jobs import app

log = structlog.get_logger(__name__)

KEEP_IDEMPOTENCY_KEYS_FOR = timedelta(days=7)


@app.periodic(cron="41 3 * * *", periodic_id="idempotency.purge")
@app.task(name="idempotency.purge", queueing_lock="idempotency.purge", pass_context=False)
async def purge_idempotency_keys(timestamp: int | None = None) -> int:
    async with container.current().database.unit_of_work() as session:
        return await IdempotencyRepository(session).purge(utcnow() - KEEP_IDEMPOTENCY_KEYS_FOR)


@app.periodic(cron="17 * * * *", periodic_id="contracts.renew")
@app.task(name="contracts.renew", queueing_lock="contracts.renew", pass_context=False)
async def renew_contract_periods(timestamp: int | None = None) -> int:
    """Each account whose contract pays a period ending within a day: renewed in a transaction of its own (its
    lock held), so one account's trouble never holds back the others. Returns how many periods were renewed."""
    database, now = container.current().database, utcnow()
    async with database.reader() as session:
        due = await BillingRepository(session).accounts_with_contract_periods_due(
            service.CONTRACT_PROVIDER, now=now, horizon=now + service.CONTRACT_RENEWAL_LEAD
        )
    renewed = 0
    for account_id in due:
        try:
            async with database.unit_of_work() as session:
                renewed += await service.renew_contract_periods(session, account_id=account_id, now=now)
        except Exception as error:  # noqa: BLE001 - logged; the next hour's run tries the account again
            log.error("contracts.renew_failed", account_id=str(account_id), error=type(error).__name__)
    return renewed
