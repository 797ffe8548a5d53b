"""The webhook inbox: receive (verify, store once, queue), process (apply once, retry, flag), replay.

Receiving does as little as possible, so the provider gets a fast 2xx: the signature is checked, the event is
inserted unless it is stored already, and its processing is queued only when it is new. Processing treats the
event as a hint: each handler re-reads the object it names from the provider and records billing facts from
that, never from the payload or from the order events arrive in (REFERENCE §1 F2, F5, F10). Never commits.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit
from jushostit.billing import service as billing
from jushostit.billing.provider import StripeProvider
from jushostit.billing.repository import BillingRepository
from jushostit.kit import jobs
from jushostit.kit.errors import BadRequest, Conflict, NotFound
from jushostit.models import Account, WebhookEvent, WebhookEventStatus
from jushostit.webhooks.repository import WebhookRepository
from jushostit.webhooks.signature import SignatureRefused, verify

STRIPE = "stripe"
PROCESS_TASK = "webhooks.process"
# Attempts before an event is `failed` (an admin replays it); the job retries with exponential backoff.
MAX_ATTEMPTS = 8


def process_lock(event_id: uuid.UUID | str) -> str:
    return f"webhook:{event_id}"


def queue_processing(event_id: uuid.UUID) -> None:
    jobs.enqueue(PROCESS_TASK, queueing_lock=process_lock(event_id), event_id=str(event_id))


@dataclass(frozen=True)
class ParsedEvent:
    event_id: str
    event_type: str
    created: datetime
    object_id: str | None
    customer_ref: str | None
    payload: dict[str, Any]


def _text(value: Any, limit: int = 255) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def parse_stripe_event(payload: str) -> ParsedEvent:
    """The fields the inbox keeps of a Stripe event; a clear 400 for anything that is not one."""
    try:
        event = json.loads(payload)
    except ValueError:
        raise BadRequest("The body is not JSON", code="malformed_event") from None
    if not isinstance(event, dict):
        raise BadRequest("The body is not a Stripe event object", code="malformed_event")
    event_id, event_type, created = _text(event.get("id")), _text(event.get("type")), event.get("created")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if event_id is None or event_type is None or not isinstance(created, int) or not isinstance(obj, dict):
        raise BadRequest("A Stripe event needs `id`, `type`, `created` and `data.object`", code="malformed_event")
    customer = obj.get("customer")
    if obj.get("object") == "customer":
        customer = obj.get("id")
    elif isinstance(customer, dict):
        customer = customer.get("id")
    try:
        moment = datetime.fromtimestamp(created, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise BadRequest("`created` is not a Unix timestamp", code="malformed_event") from None
    return ParsedEvent(event_id, event_type, moment, _text(obj.get("id")), _text(customer), event)


@dataclass(frozen=True)
class Receipt:
    event_id: str
    duplicate: bool


async def receive_stripe(
    session: AsyncSession, *, body: bytes, signature: str | None, secrets: list[str], now: datetime
) -> Receipt:
    """Verify, store once, queue once. A refused request stores nothing."""
    if not secrets:
        raise NotFound("Stripe webhooks are not configured here", code="webhooks_not_configured")
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The body is not UTF-8", code="malformed_event") from None
    try:
        verify(payload, signature, secrets, now=int(now.timestamp()))
    except SignatureRefused as refused:
        raise BadRequest(str(refused), code="bad_signature") from None
    event = parse_stripe_event(payload)
    stored = await WebhookRepository(session).insert_if_new(
        provider=STRIPE, event_id=event.event_id, event_type=event.event_type, object_id=event.object_id,
        customer_ref=event.customer_ref, payload=event.payload, created_at_provider=event.created, received_at=now,
    )
    if stored is not None:
        queue_processing(stored)
    return Receipt(event.event_id, duplicate=stored is None)


# --- processing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventContext:
    session: AsyncSession
    stripe: StripeProvider
    event: WebhookEvent
    account: Account


# A handler applies its event and says whether it concerned something of ours (False: flagged `unmatched`).
Handler = Callable[[EventContext], Awaitable[bool]]


async def _customer_deleted(context: EventContext) -> bool:
    """Stripe deleted the customer: the account no longer has one (a new checkout creates another). Only when
    Stripe confirms the deletion: the event alone could be stale."""
    customer = await context.stripe.client.v1.customers.retrieve_async(context.event.customer_ref or "")
    if not getattr(customer, "deleted", False):
        return True  # it still exists: nothing to do
    account = context.account
    await audit.record(
        context.session, action="account.payment_customer_removed", target_type="account", target_id=account.id,
        account_id=account.id, before={"provider_customer_id": account.provider_customer_id},
        after={"provider_customer_id": None, "event": context.event.event_id},
    )
    account.provider_customer_id = None
    return True


async def _sync_subscription(context: EventContext, external_id: str) -> bool:
    snapshot = await context.stripe.fetch_subscription(external_id)
    return await billing.apply_provider_subscription(context.session, account_id=context.account.id, snapshot=snapshot)


async def _checkout_session(context: EventContext) -> bool:
    checkout = await context.stripe.fetch_checkout(context.event.object_id or "")
    if checkout.our_purchase_id is not None:  # a credit pack's one-off payment
        return await billing.apply_pack_checkout(context.session, account_id=context.account.id, checkout=checkout)
    if not await billing.apply_provider_checkout(context.session, account_id=context.account.id, checkout=checkout):
        return False
    return await _sync_subscription(context, checkout.subscription_ref) if checkout.subscription_ref else True


async def _subscription(context: EventContext) -> bool:
    return await _sync_subscription(context, context.event.object_id or "")


async def _invoice(context: EventContext) -> bool:
    invoice = await context.stripe.fetch_invoice(context.event.object_id or "")
    if invoice.subscription_ref is None:
        return False  # an invoice of no subscription: not ours to apply
    # The subscription first: it links ours by its metadata when this invoice arrives before any other event.
    if not await _sync_subscription(context, invoice.subscription_ref):
        return False
    return await billing.apply_provider_invoice(context.session, account_id=context.account.id, invoice=invoice)


async def pull_subscription(
    session: AsyncSession, stripe: StripeProvider, *, account_id: uuid.UUID, external_id: str | None,
    checkout_id: str | None,
) -> bool:
    """The periodic pull: converge one of our Stripe subscriptions on Stripe's records without any event (a
    webhook that never arrived is caught up here): its checkout while pending, then the subscription and the
    invoice of its current period."""
    await BillingRepository(session).lock_account(account_id)
    if external_id is None and checkout_id is not None:
        checkout = await stripe.fetch_checkout(checkout_id)
        if not await billing.apply_provider_checkout(session, account_id=account_id, checkout=checkout):
            return False
        external_id = checkout.subscription_ref
    if external_id is None:
        return True  # still open at Stripe
    snapshot = await stripe.fetch_subscription(external_id)
    if not await billing.apply_provider_subscription(session, account_id=account_id, snapshot=snapshot):
        return False
    if snapshot.latest_invoice_ref is not None:
        invoice = await stripe.fetch_invoice(snapshot.latest_invoice_ref)
        await billing.apply_provider_invoice(session, account_id=account_id, invoice=invoice)
    return True


async def pull_pack_checkout(
    session: AsyncSession, stripe: StripeProvider, *, account_id: uuid.UUID, checkout_id: str
) -> bool:
    """The periodic pull for a credit pack still waiting for its payment: its checkout re-read and applied."""
    await BillingRepository(session).lock_account(account_id)
    checkout = await stripe.fetch_checkout(checkout_id)
    return await billing.apply_pack_checkout(session, account_id=account_id, checkout=checkout)


HANDLERS: dict[str, Handler] = {
    **{f"checkout.session.{change}": _checkout_session
       for change in ("completed", "expired", "async_payment_succeeded", "async_payment_failed")},
    "customer.deleted": _customer_deleted,
    **{f"customer.subscription.{change}": _subscription
       for change in ("created", "updated", "deleted", "paused", "resumed")},
    **{f"invoice.{change}": _invoice for change in ("paid", "payment_succeeded", "payment_failed", "finalized")},
}


class NotConfigured(RuntimeError):
    """Processing needs the Stripe API key (to re-read the objects events name)."""


async def process(
    session: AsyncSession, *, event_id: uuid.UUID, client: stripe.StripeClient | None, now: datetime
) -> WebhookEventStatus | None:
    """Apply a stored event once. Returns its new status, or None when it was not pending (applied already, or
    given up on). A handler's exception rolls the whole attempt back: the caller records the failure."""
    repository = WebhookRepository(session)
    event = await repository.for_update(event_id)
    if event is None or event.status != WebhookEventStatus.pending:
        return None
    handler = HANDLERS.get(event.event_type)
    account = await repository.account_by_customer(event.customer_ref) if event.customer_ref else None
    if handler is None:
        status = WebhookEventStatus.ignored  # a type we do not act on
    elif account is None:
        status = WebhookEventStatus.unmatched  # no account has this customer: flagged, not applied
    elif client is None:
        raise NotConfigured("JUSHOSTIT_STRIPE_SECRET_KEY is not set: events cannot be checked with Stripe")
    else:
        # The account's lock is held from before Stripe is read until the commit: of two workers applying
        # events of one account, the later read is the one that lands.
        await BillingRepository(session).lock_account(account.id)
        applied = await handler(EventContext(session, StripeProvider(client), event, account))
        status = WebhookEventStatus.processed if applied else WebhookEventStatus.unmatched
    event.status = status
    event.account_id = account.id if account else None
    event.attempts += 1
    event.last_error = None
    event.processed_at = now
    return status


def is_permanent(error: Exception) -> bool:
    """An error that another attempt cannot fix: Stripe refused the request itself (e.g. no such object)."""
    return isinstance(error, stripe.InvalidRequestError)


def describe(error: Exception) -> str:
    """What admins read in `last_error`: the error's kind and Stripe's message (never a key or a payload)."""
    if isinstance(error, stripe.StripeError):
        return f"{type(error).__name__}: {error.user_message or 'Stripe request failed'} (HTTP {error.http_status})"
    return f"{type(error).__name__}: {str(error)[:500]}"


async def record_failure(session: AsyncSession, *, event_id: uuid.UUID, error: Exception, attempt: int) -> bool:
    """Count a failed attempt; returns True when it was the last one (the event is then `failed`)."""
    final = is_permanent(error) or attempt >= MAX_ATTEMPTS
    await WebhookRepository(session).record_failure(event_id, error=describe(error), final=final)
    return final


async def replay(session: AsyncSession, *, event_id: uuid.UUID) -> WebhookEvent:
    """An admin asks for an event to be applied again (after fixing what made it fail, or to re-check an
    ignored or unmatched one now that the account exists). Applying is idempotent, so a replay of a processed
    event is harmless too."""
    repository = WebhookRepository(session)
    event = await repository.for_update(event_id)
    if event is None:
        raise NotFound("Webhook event not found", code="webhook_event_not_found")
    if event.status == WebhookEventStatus.pending:
        raise Conflict("The event is waiting to be processed already", code="webhook_event_pending")
    before = {"status": event.status, "attempts": event.attempts, "last_error": event.last_error}
    event.status = WebhookEventStatus.pending
    event.attempts = 0
    event.last_error = None
    event.processed_at = None
    await audit.record(
        session, action="webhook_event.replayed", target_type="webhook_event", target_id=event.id,
        before=before, after={"status": event.status},
    )
    queue_processing(event.id)
    return event
