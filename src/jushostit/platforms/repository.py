"""Every query of platforms."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.models import Platform


class PlatformRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, values: dict[str, Any]) -> Platform | None:
        """The new platform, or None when its name was taken meanwhile."""
        platform_id = await self.session.scalar(
            insert(Platform).values(**values).on_conflict_do_nothing(index_elements=[Platform.name])
            .returning(Platform.id)
        )
        return None if platform_id is None else await self.session.get(Platform, platform_id)

    async def all(self) -> list[Platform]:
        return list((await self.session.scalars(select(Platform).order_by(Platform.name))).all())

    async def by_id(self, platform_id: uuid.UUID) -> Platform | None:
        return await self.session.get(Platform, platform_id)

    async def name_taken(self, name: str) -> bool:
        return await self.session.scalar(select(Platform.id).where(Platform.name == name)) is not None

    async def delete(self, platform: Platform) -> None:
        await self.session.delete(platform)
        await self.session.flush()
