from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by, array_agg
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.models import Account, Instance, User


def failing_instance() -> ColumnElement[bool]:
    """An instance that is not working: observed `failed` (a permanent problem such as a template the runtime
    cannot run carries a reason but no error) or whose last apply failed (an error, whatever the status)."""
    return (Instance.observed_status == "failed") | Instance.last_error.is_not(None)


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
                    select(Instance.account_id).where(failing_instance(), Instance.deleted_at.is_(None))
                )
            )
        return list((await self.session.scalars(stmt)).all())

    async def instance_health(
        self, account_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[int, int, str | None, datetime | None]]:
        """Per account, over its instances not deleted: (instances, failing, the error — or else the reason — of
        the failing one reconciled last, latest reconcile)."""
        problem = func.coalesce(Instance.last_error, Instance.status_reason)
        latest_problem = array_agg(
            aggregate_order_by(problem, Instance.last_reconciled_at.desc().nulls_last(), Instance.id)
        ).filter(failing_instance())
        rows = await self.session.execute(
            select(
                Instance.account_id,
                func.count(),
                func.count().filter(failing_instance()),
                latest_problem[1],
                func.max(Instance.last_reconciled_at),
            )
            .where(Instance.account_id.in_(account_ids), Instance.deleted_at.is_(None))
            .group_by(Instance.account_id)
        )
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows.all()}

    async def user_for_update(self, user_id: uuid.UUID) -> User | None:
        """The user, locked until the transaction ends (one suspension or unsuspension at a time)."""
        return await self.session.scalar(
            select(User).where(User.id == user_id).with_for_update().execution_options(populate_existing=True)
        )
