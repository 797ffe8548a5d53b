"""Webhook jobs: apply one stored event (with retries), and a sweep that queues events whose job was lost."""

from __future__ import annotations

import uuid
from datetime import timedelta

import structlog
from procrastinate import JobContext, RetryStrategy

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
    """Every open Stripe subscription of ours re-read from Stripe and converged, one transaction each; one that
    fails is logged and tried again next time. Returns (converged, failed)."""
    c = container.current()
    client = stripe_client(c.settings)
    if client is None:
        return 0, 0
    stripe = StripeProvider(client)
    converged = failed = 0
    after = None
    while True:
        async with c.database.unit_of_work() as session:
            page = await BillingRepository(session).provider_subscriptions_to_check(
                stripe.name, after=after, limit=PULL_PAGE
            )
        for subscription_id, account_id, external_id, checkout_id in page:
            try:
                async with c.database.unit_of_work() as session:
                    await service.pull_subscription(
                        session, stripe, account_id=account_id, external_id=external_id, checkout_id=checkout_id
                    )
                converged += 1
            except Exception as error:  # noqa: BLE001 - one subscription never stops the others; retried next pull
                failed += 1
                log.warning("stripe.pull_failed", subscription_id=str(subscription_id), error=service.describe(error))
        if len(page) < PULL_PAGE:
            return converged, failed
        after = page[-1][0]
