"""Every query the reconciler makes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, cast

from sqlalchemy import ARRAY, Date, any_, bindparam, select, text, update
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from jushostit.billing.periods import month_of, next_month
from jushostit.billing.repository import month_spend_of, oldest_open_invoice_due
from jushostit.models import Account, Instance, Plan, ServiceTemplate, StoredSecret, Subscription
from jushostit.models.rows import AccountFactsRow, DunningRecipient, PlanFactsRow, SubscriptionFactsRow


class AccountRow(AccountFactsRow, DunningRecipient, Protocol):
    """An account as the reconciler reads it (see _ACCOUNTS)."""

    @property
    def reconcile_error(self) -> str | None: ...
    @property
    def reconcile_failures(self) -> int: ...


class SnapshotRow(AccountRow, Protocol):
    """An account as a pass reads it: its row, and the due date of its oldest open invoice."""

    @property
    def invoice_due_at(self) -> datetime | None: ...
    @property
    def month_spend_minor(self) -> int: ...  # this month's usage charges

# Built once: the reconciler runs these for every account on every resync, and building a statement costs
# more than running it.
# One array parameter rather than an expanded IN list: the statement text stays the same whatever the number
# of accounts, so PostgreSQL and psycopg prepare it once.
_IDS = bindparam("account_ids", type_=ARRAY(PG_UUID(as_uuid=True)))
# Plain rows, not ORM objects: the resync reads thousands of accounts and the ORM would cost more than the
# queries. The rows carry just the columns the facts and the write-back need.
_ACCOUNTS = select(
    Account.id, Account.status, Account.billing_mode, Account.suspension_reasons, Account.past_due_since,
    Account.budget_minor, Account.dunning_policy, Account.billing_email,
    Account.contract_ends_at,
    Account.reconcile_error, Account.reconcile_failures, Account.name, Account.dunning_episode,
    oldest_open_invoice_due(Account.id).label("invoice_due_at"),
    month_spend_of(Account.id, bindparam("month", type_=Date), bindparam("until", type_=Date)).label("month_spend_minor"),
).where(Account.id == any_(_IDS))
_SUBSCRIPTIONS = select(
    Subscription.account_id, Subscription.id, Subscription.plan_id, Subscription.status,
    Subscription.current_period_start, Subscription.current_period_end, Subscription.cancelled_at,
    Subscription.quotas,
).where(Subscription.account_id == any_(_IDS))
_PLANS = select(Plan.id, Plan.code, Plan.quotas).where(Plan.id == any_(bindparam("plan_ids", type_=ARRAY(PG_UUID(as_uuid=True)))))
_LIVE_INSTANCES = (
    select(Instance)
    .where(Instance.account_id == any_(_IDS), Instance.deleted_at.is_(None))
    .order_by(Instance.id)
)
_SECRET_CIPHERTEXTS = select(StoredSecret.owner_id, StoredSecret.name, StoredSecret.ciphertext).where(
    StoredSecret.owner_type == "instance", StoredSecret.owner_id == any_(bindparam("instance_ids", type_=ARRAY(PG_UUID(as_uuid=True))))
)
# Advisory-lock namespaces: account reconciles (the second key is the account id's hash), and singletons such
# as the resync (the second key is the name's hash).
RECONCILE_LOCK_NAMESPACE = 0x4A48_5243  # "JHRC"
SINGLETON_LOCK_NAMESPACE = 0x4A48_534E  # "JHSN"


class ReconcileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def accounts_with_subscriptions(
        self, account_ids: Sequence[uuid.UUID], now: datetime
    ) -> dict[uuid.UUID, tuple[SnapshotRow, list[tuple[SubscriptionFactsRow, PlanFactsRow]]]]:
        """Each account with its subscriptions and their plans, and its usage charges of the month `now` is in,
        in three round trips whatever the number of accounts (the few plans are read once, not once per
        subscription)."""
        if not account_ids:
            return {}
        ids = {"account_ids": list(account_ids)}
        month = month_of(now)
        found: dict[uuid.UUID, tuple[SnapshotRow, list[tuple[SubscriptionFactsRow, PlanFactsRow]]]] = {
            row.id: (cast(SnapshotRow, row), [])
            for row in await self.session.execute(_ACCOUNTS, {**ids, "month": month, "until": next_month(month)})
        }
        subscriptions = list(await self.session.execute(_SUBSCRIPTIONS, ids))
        plan_ids = list({row.plan_id for row in subscriptions})
        plans = {row.id: row for row in await self.session.execute(_PLANS, {"plan_ids": plan_ids})} if plan_ids else {}
        for row in subscriptions:
            found[row.account_id][1].append(
                (cast(SubscriptionFactsRow, row), cast(PlanFactsRow, plans[row.plan_id]))
            )
        return found

    async def live_instances(self, account_ids: Sequence[uuid.UUID]) -> list[Instance]:
        if not account_ids:
            return []
        return list((await self.session.scalars(_LIVE_INSTANCES, {"account_ids": list(account_ids)})).all())

    async def templates(self, codes: set[str]) -> list[ServiceTemplate]:
        if not codes:
            return []
        return list((await self.session.scalars(select(ServiceTemplate).where(ServiceTemplate.code.in_(codes)))).all())

    async def secret_ciphertexts(self, instance_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, str]]:
        """Each instance's stored secrets, still encrypted (decrypted only when a runtime needs the values)."""
        found: dict[uuid.UUID, dict[str, str]] = {}
        if instance_ids:
            for owner_id, name, ciphertext in await self.session.execute(
                _SECRET_CIPHERTEXTS, {"instance_ids": list(instance_ids)}
            ):
                found.setdefault(owner_id, {})[name] = ciphertext
        return found

    async def instances_for_update(self, ids: Sequence[uuid.UUID]) -> list[Instance]:
        """Locked in id order: two passes locking overlapping sets never deadlock, and the order is known."""
        if not ids:
            return []
        stmt = select(Instance).where(Instance.id.in_(ids)).order_by(Instance.id).with_for_update()
        return list((await self.session.scalars(stmt)).all())

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
