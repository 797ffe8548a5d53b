from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.models import Account, Instance


class AdminRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def accounts(self, *, after: uuid.UUID | None, limit: int, failing_only: bool) -> list[Account]:
        stmt = select(Account).order_by(Account.id).limit(limit)
        if after is not None:
            stmt = stmt.where(Account.id > after)
        if failing_only:
            stmt = stmt.where(
                Account.reconcile_error.is_not(None)
                | Account.id.in_(
                    select(Instance.account_id).where(Instance.last_error.is_not(None), Instance.deleted_at.is_(None))
                )
            )
        return list((await self.session.scalars(stmt)).all())

    async def instance_health(
        self, account_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[int, int, str | None, datetime | None]]:
        """Per account: (instances, failing, latest error, latest reconcile)."""
        rows = await self.session.execute(
            select(
                Instance.account_id,
                func.count(),
                func.count().filter(Instance.last_error.is_not(None)),
                func.max(Instance.last_error),
                func.max(Instance.last_reconciled_at),
            )
            .where(Instance.account_id.in_(account_ids), Instance.deleted_at.is_(None))
            .group_by(Instance.account_id)
        )
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows.all()}
