"""Every query the reconciler makes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.models import Account, Instance, Plan, ServiceTemplate, StoredSecret, Subscription


class ReconcileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def account(self, account_id: uuid.UUID) -> Account | None:
        return await self.session.get(Account, account_id)

    async def subscriptions(self, account_ids: Sequence[uuid.UUID]) -> list[tuple[Subscription, Plan]]:
        rows = await self.session.execute(
            select(Subscription, Plan).join(Plan, Plan.id == Subscription.plan_id).where(
                Subscription.account_id.in_(account_ids)
            )
        )
        return [(s, p) for s, p in rows.all()]

    async def live_instances(self, account_ids: Sequence[uuid.UUID]) -> list[Instance]:
        stmt = select(Instance).where(Instance.account_id.in_(account_ids), Instance.deleted_at.is_(None))
        return list((await self.session.scalars(stmt.order_by(Instance.id))).all())

    async def templates(self, codes: set[str]) -> list[ServiceTemplate]:
        if not codes:
            return []
        return list((await self.session.scalars(select(ServiceTemplate).where(ServiceTemplate.code.in_(codes)))).all())

    async def instance_secrets(self, instance_ids: Sequence[uuid.UUID]) -> list[StoredSecret]:
        if not instance_ids:
            return []
        stmt = select(StoredSecret).where(StoredSecret.owner_type == "instance", StoredSecret.owner_id.in_(instance_ids))
        return list((await self.session.scalars(stmt)).all())

    async def instances_for_update(self, ids: Sequence[uuid.UUID]) -> list[Instance]:
        if not ids:
            return []
        return list((await self.session.scalars(select(Instance).where(Instance.id.in_(ids)).with_for_update())).all())

    async def account_ids(self, *, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
        stmt = select(Account.id).order_by(Account.id).limit(limit)
        if after is not None:
            stmt = stmt.where(Account.id > after)
        return list((await self.session.scalars(stmt)).all())
