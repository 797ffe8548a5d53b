from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.models import AuditEntry

# Serialises writers of the chain: each entry needs the previous one's hash.
AUDIT_CHAIN_LOCK = 0x4A48_4155  # "JHAU"


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_chain_head(self) -> tuple[int, str | None]:
        await self.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_CHAIN_LOCK})
        row = (
            await self.session.execute(select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1))
        ).first()
        return (row.seq, row.hash) if row else (0, None)

    async def add(self, entry: AuditEntry) -> None:
        self.session.add(entry)
        await self.session.flush()

    async def list(
        self,
        *,
        after_seq: int | None,
        limit: int,
        action: str | None = None,
        actor_id: uuid.UUID | None = None,
        account_id: uuid.UUID | None = None,
        target_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[AuditEntry]:
        """Newest first."""
        stmt = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit)
        if after_seq is not None:
            stmt = stmt.where(AuditEntry.seq < after_seq)
        if action:
            stmt = stmt.where(AuditEntry.action == action)
        if actor_id:
            stmt = stmt.where(AuditEntry.actor_id == actor_id)
        if account_id:
            stmt = stmt.where(AuditEntry.account_id == account_id)
        if target_id:
            stmt = stmt.where(AuditEntry.target_id == target_id)
        if since:
            stmt = stmt.where(AuditEntry.created_at >= since)
        if until:
            stmt = stmt.where(AuditEntry.created_at < until)
        return list((await self.session.scalars(stmt)).all())

    async def stream_in_order(self, batch: int = 1000) -> AsyncIterator[AuditEntry]:
        last = 0
        while True:
            rows = (
                await self.session.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.seq > last)
                    .order_by(AuditEntry.seq)
                    .limit(batch)
                    .execution_options(populate_existing=True)  # what the table holds now, not a cached copy
                )
            ).all()
            if not rows:
                return
            for row in rows:
                yield row
            last = rows[-1].seq
            self.session.expunge_all()

    async def count(self) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(AuditEntry)) or 0)
