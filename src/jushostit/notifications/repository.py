from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.models import EmailOutbox, EmailStatus


class OutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, email: EmailOutbox) -> EmailOutbox:
        self.session.add(email)
        await self.session.flush()
        return email

    async def lock_if_due(self, email_id: uuid.UUID, now: datetime) -> EmailOutbox | None:
        """Lock one due, pending email; another worker holding it makes this return None."""
        stmt = (
            select(EmailOutbox)
            .where(
                EmailOutbox.id == email_id,
                EmailOutbox.status == EmailStatus.pending,
                EmailOutbox.next_attempt_at <= now,
            )
            .with_for_update(skip_locked=True)
        )
        return await self.session.scalar(stmt)

    async def due_ids(self, now: datetime, limit: int = 100) -> list[uuid.UUID]:
        stmt = (
            select(EmailOutbox.id)
            .where(EmailOutbox.status == EmailStatus.pending, EmailOutbox.next_attempt_at <= now)
            .order_by(EmailOutbox.next_attempt_at)
            .limit(limit)
        )
        return list((await self.session.scalars(stmt)).all())

    async def count_to(self, address: str, templates: frozenset[str], since: datetime) -> int:
        """E-mails of these templates queued to `address` since `since`, counted under a lock on the address
        (held to the end of the transaction) so parallel requests cannot both pass a limit."""
        await self.session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                                   {"key": f"outbox:{address}"})
        return int(
            await self.session.scalar(
                select(func.count()).select_from(EmailOutbox).where(
                    EmailOutbox.to_address == address,
                    EmailOutbox.template.in_(templates),
                    EmailOutbox.created_at >= since,
                )
            )
            or 0
        )
