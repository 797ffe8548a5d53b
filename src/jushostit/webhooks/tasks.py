"""Webhook jobs: apply one stored event (with retries), and a sweep that queues events whose job was lost."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import structlog
from procrastinate import JobContext, RetryStrategy
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit import container
from jushostit.billing.provider import StripeProvider
from jushostit.billing.repository import BillingRepository
from jushostit.billing.stripe_api import stripe_client
from jushostit.kit.db import utcnow
from jushostit.kit.jobs import app
from jushostit.webhooks import service
from jushostit.webhooks.repository import WebhookRepository

log = structlog.get_logger(__name__)

# An event still pending this long after it arrived lost its job (a crash between commit and defer).
LOST_AFTER = timedelta(minutes=2)
SWEEP_BATCH = 500
# The safety net under the webhooks: every open Stripe subscription is re-read this often.
PULL_EVERY_MINUTES = 15
PULL_PAGE = 200


@app.task(
    name=service.PROCESS_TASK, pass_context=True,
    retry=RetryStrategy(max_attempts=service.MAX_ATTEMPTS - 1, exponential_wait=2),
)
async def process_event(context: JobContext, event_id: str) -> None:
    c = container.current()
    identifier = uuid.UUID(event_id)
    try:
        async with c.database.unit_of_work() as session:
            status = await service.process(
                session, event_id=identifier, client=stripe_client(c.settings), now=utcnow()
            )
    except Exception as error:
        attempt = (context.job.attempts or 0) + 1
        async with c.database.unit_of_work() as session:
            final = await service.record_failure(session, event_id=identifier, error=error, attempt=attempt)
        log.warning("webhook.failed", event_id=event_id, attempt=attempt, final=final, error=service.describe(error))
        if not final:
            raise  # procrastinate retries after its backoff
        return
    if status is not None:
        log.info("webhook.processed", event_id=event_id, status=status.value)


@app.periodic(cron="* * * * *", periodic_id="webhooks.sweep")
@app.task(name="webhooks.sweep", queueing_lock="webhooks.sweep", pass_context=False)
async def sweep(timestamp: int) -> int:
    """Queue every event that has waited too long; one already queued (or retrying) keeps its job."""
    async with container.current().database.unit_of_work() as session:
        lost = await WebhookRepository(session).pending_before(utcnow() - LOST_AFTER, SWEEP_BATCH)
        for event_id in lost:
            service.queue_processing(event_id)
    return len(lost)


@app.periodic(cron=f"*/{PULL_EVERY_MINUTES} * * * *", periodic_id="stripe.pull")
@app.task(name="stripe.pull", queueing_lock="stripe.pull", pass_context=False)
async def pull_from_stripe(timestamp: int) -> tuple[int, int]:
    """Every open Stripe subscription of ours, and every credit pack still waiting for its payment, re-read
    from Stripe and converged, one transaction each; one that fails is logged and tried again next time.
    Returns (converged, failed)."""
    client = stripe_client(container.current().settings)
    if client is None:
        return 0, 0
    stripe = StripeProvider(client)

    async def subscriptions(session: AsyncSession, after: uuid.UUID | None) -> Sequence[tuple[Any, ...]]:
        return await BillingRepository(session).provider_subscriptions_to_check(stripe.name, after=after,
                                                                               limit=PULL_PAGE)

    async def subscription(session: AsyncSession, row: tuple[Any, ...]) -> None:
        _, account_id, external_id, checkout_id = row
        await service.pull_subscription(session, stripe, account_id=account_id, external_id=external_id,
                                        checkout_id=checkout_id)

    async def packs(session: AsyncSession, after: uuid.UUID | None) -> Sequence[tuple[Any, ...]]:
        return await BillingRepository(session).pending_pack_checkouts(stripe.name, after=after, limit=PULL_PAGE)

    async def pack(session: AsyncSession, row: tuple[Any, ...]) -> None:
        _, account_id, checkout_id = row
        await service.pull_pack_checkout(session, stripe, account_id=account_id, checkout_id=checkout_id)

    first = await _converge_each(subscriptions, subscription)
    second = await _converge_each(packs, pack)
    return first[0] + second[0], first[1] + second[1]


async def _converge_each(
    page_after: Callable[[AsyncSession, uuid.UUID | None], Awaitable[Sequence[tuple[Any, ...]]]],
    converge: Callable[[AsyncSession, tuple[Any, ...]], Awaitable[None]],
) -> tuple[int, int]:
    """Each row (its id first), a page at a time in id order, converged in a transaction of its own: one that
    fails is logged and counted, never stops the others."""
    database = container.current().database
    converged = failed = 0
    after = None
    while True:
        async with database.unit_of_work() as session:
            page = await page_after(session, after)
        for row in page:
            try:
                async with database.unit_of_work() as session:
                    await converge(session, row)
                converged += 1
            except Exception as error:  # noqa: BLE001 - retried at the next pull
                failed += 1
                log.warning("stripe.pull_failed", id=str(row[0]), error=service.describe(error))
        if len(page) < PULL_PAGE:
            return converged, failed
        after = page[-1][0]
