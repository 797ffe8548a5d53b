"""Every query the reconciler makes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from jushostit.models import Account, Instance, Plan, ServiceTemplate, StoredSecret, Subscription


# Built once: the reconciler runs these for every account on every resync, and building a statement costs
# more than running it.
_ACCOUNTS_WITH_SUBSCRIPTIONS = (
    select(Account, Subscription, Plan)
    .outerjoin(Subscription, Subscription.account_id == Account.id)
    .outerjoin(Plan, Plan.id == Subscription.plan_id)
    .where(Account.id.in_(bindparam("account_ids", expanding=True)))
)
_LIVE_INSTANCES = (
    select(Instance)
    .where(Instance.account_id.in_(bindparam("account_ids", expanding=True)), Instance.deleted_at.is_(None))
    .order_by(Instance.id)
)
# Advisory-lock namespace of account reconciles (the second key is the account id's hash).
RECONCILE_LOCK_NAMESPACE = 0x4A48_5243  # "JHRC"


class ReconcileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def accounts_with_subscriptions(
        self, account_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[Account, list[tuple[Subscription, Plan]]]]:
        """Each account with its subscriptions and their plans, in one round trip."""
        found: dict[uuid.UUID, tuple[Account, list[tuple[Subscription, Plan]]]] = {}
        if not account_ids:
            return found
        for account, subscription, plan in await self.session.execute(
            _ACCOUNTS_WITH_SUBSCRIPTIONS, {"account_ids": list(account_ids)}
        ):
            entry = found.setdefault(account.id, (account, []))
            if subscription is not None:
                entry[1].append((subscription, plan))
        return found

    async def subscriptions(self, account_ids: Sequence[uuid.UUID]) -> list[tuple[Subscription, Plan]]:
        rows = await self.session.execute(
            select(Subscription, Plan).join(Plan, Plan.id == Subscription.plan_id).where(
                Subscription.account_id.in_(account_ids)
            )
        )
        return [(s, p) for s, p in rows.all()]

    async def live_instances(self, account_ids: Sequence[uuid.UUID]) -> list[Instance]:
        if not account_ids:
            return []
        return list((await self.session.scalars(_LIVE_INSTANCES, {"account_ids": list(account_ids)})).all())

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


class ReconcileLocks:
    """Session-level advisory locks, one per account, held on a dedicated autocommit connection for a whole
    pass (the apply included), so the job path and the resync path never reconcile one account at once."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    async def wait_for(self, account_id: uuid.UUID) -> None:
        await self.connection.execute(
            text("SELECT pg_advisory_lock(:ns, hashtext(:id))"), {"ns": RECONCILE_LOCK_NAMESPACE, "id": str(account_id)}
        )

    async def try_many(self, account_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """Lock what is free now; returns the accounts locked."""
        if not account_ids:
            return []
        rows = await self.connection.execute(
            text(
                "SELECT id FROM unnest(CAST(:ids AS uuid[])) AS id "
                "WHERE pg_try_advisory_lock(:ns, hashtext(id::text))"
            ),
            {"ns": RECONCILE_LOCK_NAMESPACE, "ids": [str(a) for a in account_ids]},
        )
        return [uuid.UUID(str(row[0])) for row in rows]

    async def release(self, account_id: uuid.UUID) -> None:
        await self.connection.execute(
            text("SELECT pg_advisory_unlock(:ns, hashtext(:id))"), {"ns": RECONCILE_LOCK_NAMESPACE, "id": str(account_id)}
        )

    async def release_all(self) -> None:
        await self.connection.execute(text("SELECT pg_advisory_unlock_all()"))
