from __future__ import annotations

import uuid

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.models import StoredSecret


class SecretRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, owner_type: str, owner_id: uuid.UUID, name: str) -> StoredSecret | None:
        return await self.session.scalar(
            select(StoredSecret).where(
                StoredSecret.owner_type == owner_type, StoredSecret.owner_id == owner_id, StoredSecret.name == name
            )
        )

    async def of_owner(self, owner_type: str, owner_id: uuid.UUID) -> list[StoredSecret]:
        stmt = select(StoredSecret).where(StoredSecret.owner_type == owner_type, StoredSecret.owner_id == owner_id)
        return list((await self.session.scalars(stmt.order_by(StoredSecret.name))).all())

    async def delete_of_owner(self, owner_type: str, owner_id: uuid.UUID) -> None:
        await self.session.execute(
            delete(StoredSecret).where(StoredSecret.owner_type == owner_type, StoredSecret.owner_id == owner_id)
        )

    async def add(self, secret: StoredSecret) -> None:
        self.session.add(secret)
        await self.session.flush()

    async def batch_for_update(self, *, after: uuid.UUID | None, limit: int) -> list[StoredSecret]:
        stmt = select(StoredSecret).order_by(StoredSecret.id).limit(limit).with_for_update()
        if after is not None:
            stmt = stmt.where(StoredSecret.id > after)
        return list((await self.session.scalars(stmt)).all())
