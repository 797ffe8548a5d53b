"""Every query the reconciler makes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, select, text, update
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
_SECRET_CIPHERTEXTS = select(StoredSecret.owner_id, StoredSecret.name, StoredSecret.ciphertext).where(
    StoredSecret.owner_type == "instance", StoredSecret.owner_id.in_(bindparam("instance_ids", expanding=True))
)
# Advisory-lock namespaces: account reconciles (the second key is the account id's hash), and singletons such
# as the resync (the second key is the name's hash).
RECONCILE_LOCK_NAMESPACE = 0x4A48_5243  # "JHRC"
SINGLETON_LOCK_NAMESPACE = 0x4A48_534E  # "JHSN"


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

    async def secret_ciphertexts(self, instance_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, bytes]]:
        """Each instance's stored secrets, still encrypted (decrypted only when a runtime needs the values)."""
        found: dict[uuid.UUID, dict[str, bytes]] = {}
        if instance_ids:
            for owner_id, name, ciphertext in await self.session.execute(
                _SECRET_CIPHERTEXTS, {"instance_ids": list(instance_ids)}
            ):
                found.setdefault(owner_id, {})[name] = ciphertext
        return found

    async def lock_account(self, account_id: uuid.UUID) -> Account | None:
        """The account row, locked: fact writers (which lock it too) wait, so the facts read next stay true
        until this transaction commits."""
        return await self.session.scalar(select(Account).where(Account.id == account_id).with_for_update())

    async def instances_for_update(self, ids: Sequence[uuid.UUID]) -> list[Instance]:
        if not ids:
            return []
        return list((await self.session.scalars(select(Instance).where(Instance.id.in_(ids)).with_for_update())).all())

    async def record_account_error(self, account_id: uuid.UUID, message: str, now: datetime) -> None:
        await self.session.execute(
            update(Account).where(Account.id == account_id).values(
                reconcile_error=message, reconcile_error_at=now, reconcile_failures=Account.reconcile_failures + 1
            )
        )

    async def clear_account_error(self, account_id: uuid.UUID) -> None:
        await self.session.execute(
            update(Account).where(Account.id == account_id).values(reconcile_error=None, reconcile_failures=0)
        )

    async def cache_account_status(self, account_id: uuid.UUID, status: str) -> None:
        await self.session.execute(update(Account).where(Account.id == account_id).values(status=status))

    async def account_ids(self, *, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
        stmt = select(Account.id).order_by(Account.id).limit(limit)
        if after is not None:
            stmt = stmt.where(Account.id > after)
        return list((await self.session.scalars(stmt)).all())


class ReconcileLocks:
    """Session-level advisory locks, one per account, held on a dedicated autocommit connection for a whole
    pass (the apply included), so the job path and the resync path never reconcile one account at once. They
    are only ever tried, never waited for (a waiting job would hold a worker slot and a connection), and they
    end with their connection, so a killed worker leaves none behind."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    async def try_lock(self, account_id: uuid.UUID) -> bool:
        return bool(
            await self.connection.scalar(
                text("SELECT pg_try_advisory_lock(:ns, hashtext(:id))"),
                {"ns": RECONCILE_LOCK_NAMESPACE, "id": str(account_id)},
            )
        )

    async def try_singleton(self, name: str) -> bool:
        """A process-wide lock by name (one resync at a time, whichever worker runs it)."""
        return bool(
            await self.connection.scalar(
                text("SELECT pg_try_advisory_lock(:ns, hashtext(:name))"), {"ns": SINGLETON_LOCK_NAMESPACE, "name": name}
            )
        )

    async def try_many(self, account_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """Lock what is free now; returns the accounts locked, in the order given."""
        if not account_ids:
            return []
        rows = await self.connection.execute(
            text(
                "SELECT id FROM unnest(CAST(:ids AS uuid[])) AS id "
                "WHERE pg_try_advisory_lock(:ns, hashtext(id::text))"
            ),
            {"ns": RECONCILE_LOCK_NAMESPACE, "ids": [str(a) for a in account_ids]},
        )
        locked = {uuid.UUID(str(row[0])) for row in rows}
        return [account_id for account_id in account_ids if account_id in locked]

    async def release(self, account_id: uuid.UUID) -> None:
        await self.connection.execute(
            text("SELECT pg_advisory_unlock(:ns, hashtext(:id))"), {"ns": RECONCILE_LOCK_NAMESPACE, "id": str(account_id)}
        )

    async def release_all(self) -> None:
        await self.connection.execute(text("SELECT pg_advisory_unlock_all()"))
