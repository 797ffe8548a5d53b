"""Every query of platforms and of the seats sold on them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.models import Cluster, Instance, Membership, Platform, Seat, SeatProject
from jushostit.platforms.facts import SeatFacts


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

    async def cluster_named(self, name: str) -> uuid.UUID | None:
        return await self.session.scalar(select(Cluster.id).where(Cluster.name == name))

    async def by_name(self, name: str) -> Platform | None:
        return await self.session.scalar(select(Platform).where(Platform.name == name))

    async def name_taken(self, name: str) -> bool:
        return await self.session.scalar(select(Platform.id).where(Platform.name == name)) is not None

    async def delete(self, platform: Platform) -> None:
        await self.session.delete(platform)
        await self.session.flush()


class SeatRepository:
    """Every query of seats and their holders' projects."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, seat: Seat) -> None:
        self.session.add(seat)
        await self.session.flush()

    async def of_instances(self, instance_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Seat]:
        if not instance_ids:
            return {}
        rows = await self.session.scalars(select(Seat).where(Seat.instance_id.in_(list(instance_ids))))
        return {seat.instance_id: seat for seat in rows}

    async def lock(self, instance_id: uuid.UUID) -> Seat | None:
        return await self.session.scalar(select(Seat).where(Seat.instance_id == instance_id).with_for_update())

    async def email_held(self, platform_id: uuid.UUID, email: str) -> bool:
        """A live seat on the platform already holds this email (any account's)."""
        return await self.session.scalar(
            select(Seat.instance_id).where(Seat.platform_id == platform_id, Seat.removed_at.is_(None),
                                           func.lower(Seat.email) == email.lower())
        ) is not None

    async def platform_urls(self, instance_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Where each seat's holder signs in: its platform's URL."""
        if not instance_ids:
            return {}
        rows = await self.session.execute(
            select(Seat.instance_id, Platform.base_url).join(Platform, Platform.id == Seat.platform_id)
            .where(Seat.instance_id.in_(list(instance_ids)))
        )
        return {instance_id: f"{base_url}/" for instance_id, base_url in rows}

    async def drop_removed(self, platform_id: uuid.UUID) -> None:
        """The records of seats whose platform user was removed (their history stays in the audit log)."""
        await self.session.execute(delete(Seat).where(Seat.platform_id == platform_id, Seat.removed_at.is_not(None)))

    async def in_use(self, platform_id: uuid.UUID) -> bool:
        return await self.session.scalar(
            select(Seat.instance_id).where(Seat.platform_id == platform_id, Seat.removed_at.is_(None)).limit(1)
        ) is not None

    async def facts(self, instance_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, SeatFacts]:
        """Each seat's platform, email and its holder's current role in the seat's account, in one query."""
        if not instance_ids:
            return {}
        rows = await self.session.execute(
            select(Seat.instance_id, Seat.platform_id, Seat.email, Membership.role, Platform.project_limits)
            .join(Platform, Platform.id == Seat.platform_id)
            .join(Instance, Instance.id == Seat.instance_id)
            .outerjoin(Membership, (Membership.user_id == Seat.user_id) & (Membership.account_id == Instance.account_id))
            .where(Seat.instance_id.in_(list(instance_ids)))
        )
        return {instance_id: SeatFacts(platform_id, email, role.value if role is not None else None, dict(limits))
                for instance_id, platform_id, email, role, limits in rows}

    async def projects(self, instance_id: uuid.UUID) -> list[SeatProject]:
        return list((await self.session.scalars(
            select(SeatProject).where(SeatProject.instance_id == instance_id).order_by(SeatProject.project_id)
        )).all())

    async def replace_projects(self, instance_id: uuid.UUID, projects: Sequence[tuple[int, str, str]]) -> None:
        """The seat holder's projects as (id, name, namespace), instead of those recorded."""
        await self.session.execute(delete(SeatProject).where(SeatProject.instance_id == instance_id))
        for project_id, name, namespace in projects:
            self.session.add(SeatProject(instance_id=instance_id, project_id=project_id, name=name,
                                         namespace=namespace))
        await self.session.flush()
