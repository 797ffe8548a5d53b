"""Every query of the webhook inbox. Events are platform data: only platform admins read them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.kit.ids import new_id
from jushostit.models import Account, WebhookEvent, WebhookEventStatus


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_if_new(self, **values: Any) -> uuid.UUID | None:
        """Store an event unless (provider, event id) is stored already; the new row's id, or None for a
        redelivery. Insert-or-ignore, so two deliveries racing each other store it once."""
        statement = (
            insert(WebhookEvent)
            .values(id=new_id(), status=WebhookEventStatus.pending, attempts=0, **values)
            .on_conflict_do_nothing(constraint="uq_webhook_events_provider_event")
            .returning(WebhookEvent.id)
        )
        return await self.session.scalar(statement)

    async def for_update(self, event_id: uuid.UUID) -> WebhookEvent | None:
        """The event, locked: one worker applies it at a time."""
        return await self.session.scalar(
            select(WebhookEvent).where(WebhookEvent.id == event_id).with_for_update()
            .execution_options(populate_existing=True)
        )

    async def by_id(self, event_id: uuid.UUID) -> WebhookEvent | None:
        return await self.session.get(WebhookEvent, event_id)

    async def page(
        self, *, status: str | None, event_type: str | None, after: uuid.UUID | None, limit: int
    ) -> list[WebhookEvent]:
        """Newest first (ids are time-ordered)."""
        statement = select(WebhookEvent).order_by(WebhookEvent.id.desc()).limit(limit)
        if status is not None:
            statement = statement.where(WebhookEvent.status == status)
        if event_type is not None:
            statement = statement.where(WebhookEvent.event_type == event_type)
        if after is not None:
            statement = statement.where(WebhookEvent.id < after)
        return list(await self.session.scalars(statement))

    async def pending_before(self, moment: datetime, limit: int) -> list[uuid.UUID]:
        """Events still waiting since before `moment`: their processing job was lost (or is retrying)."""
        rows = await self.session.scalars(
            select(WebhookEvent.id)
            .where(WebhookEvent.status == WebhookEventStatus.pending, WebhookEvent.received_at < moment)
            .order_by(WebhookEvent.received_at)
            .limit(limit)
        )
        return list(rows)

    async def record_failure(self, event_id: uuid.UUID, *, error: str, final: bool) -> None:
        values: dict[str, Any] = {"attempts": WebhookEvent.attempts + 1, "last_error": error[:2000]}
        if final:
            values["status"] = WebhookEventStatus.failed
        await self.session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id, WebhookEvent.status == WebhookEventStatus.pending)
            .values(**values)
        )

    async def account_by_customer(self, customer_ref: str) -> Account | None:
        return await self.session.scalar(select(Account).where(Account.provider_customer_id == customer_ref))
