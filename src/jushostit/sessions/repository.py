"""Every query of browser sessions and the pools they come from; the tenant filter is the account id."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.models import BrowserSession, Instance, ServiceTemplate


class SessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, browser_session: BrowserSession) -> None:
        self.session.add(browser_session)
        await self.session.flush()

    async def open_count(self, account_id: uuid.UUID) -> int:
        return await self.session.scalar(
            select(func.count()).select_from(BrowserSession)
            .where(BrowserSession.account_id == account_id, BrowserSession.status != "ended")
        ) or 0

    async def of_account(self, account_id: uuid.UUID, *, after: uuid.UUID | None, limit: int) -> list[BrowserSession]:
        query = select(BrowserSession).where(BrowserSession.account_id == account_id)
        if after is not None:
            query = query.where(BrowserSession.id < after)
        return list((await self.session.scalars(query.order_by(BrowserSession.id.desc()).limit(limit))).all())

    async def by_id(self, session_id: uuid.UUID) -> BrowserSession | None:
        return await self.session.get(BrowserSession, session_id)

    async def by_idempotency_key(self, account_id: uuid.UUID, key: str) -> BrowserSession | None:
        return await self.session.scalar(select(BrowserSession).where(
            BrowserSession.account_id == account_id, BrowserSession.idempotency_key == key).with_for_update())

    async def lock(self, session_id: uuid.UUID) -> BrowserSession | None:
        return await self.session.scalar(
            select(BrowserSession).where(BrowserSession.id == session_id).with_for_update()
        )

    async def open_sessions(self) -> list[BrowserSession]:
        """Every session not ended (the reaper's sweep; they are few: each holds a browser)."""
        return list((await self.session.scalars(
            select(BrowserSession).where(BrowserSession.status != "ended")
        )).all())

    async def pools_of(self, account_id: uuid.UUID) -> list[tuple[Instance, dict[str, object]]]:
        """The account's live session pools with their template documents."""
        rows = await self.session.execute(
            select(Instance, ServiceTemplate.spec)
            .join(ServiceTemplate, ServiceTemplate.code == Instance.template_code)
            .where(Instance.account_id == account_id, Instance.deleted_at.is_(None),
                   ServiceTemplate.kind == "session_pool")
            .order_by(Instance.created_at)
        )
        return [(instance, spec) for instance, spec in rows]

    async def pool_template(self, pool_id: uuid.UUID) -> dict[str, object] | None:
        return await self.session.scalar(
            select(ServiceTemplate.spec).join(Instance, Instance.template_code == ServiceTemplate.code)
            .where(Instance.id == pool_id)
        )

    async def mark_started(self, session_id: uuid.UUID, *, browser_id: str, warm: bool, started_at: datetime,
                           expires_at: datetime) -> bool:
        """starting → active; False when it is no longer starting (ended meanwhile)."""
        done = await self.session.execute(
            update(BrowserSession).where(BrowserSession.id == session_id, BrowserSession.status == "starting")
            .values(status="active", browser_id=browser_id, warm=warm, started_at=started_at, expires_at=expires_at)
            .returning(BrowserSession.id)
        )
        return done.first() is not None

