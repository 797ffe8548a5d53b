from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request

from jushostit import container
from jushostit.auth.dependencies import public, require_admin
from jushostit.kit.db import SessionDep, utcnow
from jushostit.kit.errors import NotFound, responses
from jushostit.kit.pagination import Paging, split_page
from jushostit.models import WebhookEvent, WebhookEventStatus
from jushostit.webhooks import service
from jushostit.webhooks.repository import WebhookRepository
from jushostit.webhooks.schemas import WebhookEventDetail, WebhookEventPage, WebhookEventRead, WebhookReceipt

router = APIRouter(prefix="/v1", tags=["webhooks"])
admin_router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin())])

EVENT_TYPE_MAX = 255


@router.post(
    "/webhooks/stripe", response_model=WebhookReceipt, dependencies=[Depends(public())],
    responses=responses(400, 404, 413),
)
async def stripe_webhook(
    request: Request,
    session: SessionDep,
    stripe_signature: Annotated[str | None, Header(max_length=4096)] = None,
) -> WebhookReceipt:
    """Stripe's events. The `Stripe-Signature` header must sign the raw body with one of
    `JUSHOSTIT_STRIPE_WEBHOOK_SECRETS`, dated within 300 s of now either way (400 `bad_signature`); the body
    must be a Stripe event (400 `malformed_event`); 404 `webhooks_not_configured` when no secret is set. A
    refused request stores nothing. An accepted event is stored once and processed in the background: a
    redelivery answers 200 with `duplicate: true`."""
    settings = container.current().settings
    receipt = await service.receive_stripe(
        session, body=await request.body(), signature=stripe_signature,
        secrets=[secret.get_secret_value() for secret in settings.stripe_webhook_secrets], now=utcnow(),
    )
    return WebhookReceipt(received=True, event_id=receipt.event_id, duplicate=receipt.duplicate)


def _read(event: WebhookEvent) -> WebhookEventRead:
    return WebhookEventRead(
        id=event.id, provider=event.provider, event_id=event.event_id, type=event.event_type,
        object_id=event.object_id, customer_ref=event.customer_ref, account_id=event.account_id,
        status=event.status, attempts=event.attempts, last_error=event.last_error,
        created_at_provider=event.created_at_provider, received_at=event.received_at,
        processed_at=event.processed_at,
    )


def _detail(event: WebhookEvent) -> WebhookEventDetail:
    return WebhookEventDetail(**_read(event).model_dump(), payload=event.payload)


@admin_router.get("/webhook-events", response_model=WebhookEventPage, responses=responses(400, 401, 403, 422))
async def list_webhook_events(
    session: SessionDep,
    page: Paging,
    status: Annotated[WebhookEventStatus | None, Query(description="Only events in this state")] = None,
    type: Annotated[str | None, Query(max_length=EVENT_TYPE_MAX, description="Only events of this type")] = None,
) -> WebhookEventPage:
    """Received events, newest first, with their processing state and last error. `status=unmatched` lists
    the events about a customer no account has; `status=failed` those that gave up (replay them)."""
    rows = await WebhookRepository(session).page(
        status=status.value if status else None, event_type=type, after=page.after_uuid(), limit=page.limit + 1
    )
    items, cursor = split_page(rows, page, "id")
    return WebhookEventPage(items=[_read(event) for event in items], next_cursor=cursor)


@admin_router.get("/webhook-events/{event_id}", response_model=WebhookEventDetail, responses=responses(401, 403, 404))
async def get_webhook_event(event_id: uuid.UUID, session: SessionDep) -> WebhookEventDetail:
    event = await WebhookRepository(session).by_id(event_id)
    if event is None:
        raise NotFound("Webhook event not found", code="webhook_event_not_found")
    return _detail(event)


@admin_router.post(
    "/webhook-events/{event_id}/replay", response_model=WebhookEventRead, status_code=202,
    responses=responses(401, 403, 404, 409),
)
async def replay_webhook_event(event_id: uuid.UUID, session: SessionDep) -> WebhookEventRead:
    """Process the event again (409 `webhook_event_pending` while it waits already). Audited."""
    return _read(await service.replay(session, event_id=event_id))
