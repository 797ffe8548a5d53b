"""Every query of the credits ledger. Each names its account: the tenant filter of every read lives here."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.models import Account, CreditBalance, CreditEntry, CreditGrant

# Debits burn grants in this order (OpenMeter's): priority (lower first), soonest expiry (none last), oldest.
BURN_ORDER = (
    CreditGrant.priority,
    CreditGrant.expires_at.asc().nulls_last(),
    CreditGrant.created_at,
    CreditGrant.id,
)


def _live(account_id: uuid.UUID, now: datetime) -> Any:
    """Grants of the account that count now: started, not expired, with credits left."""
    return (
        CreditGrant.account_id == account_id,
        CreditGrant.effective_at <= now,
        or_(CreditGrant.expires_at.is_(None), CreditGrant.expires_at > now),
        CreditGrant.remaining > 0,
    )


class CreditsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *objects: object) -> None:
        self.session.add_all(objects)
        await self.session.flush()

    async def account_exists(self, account_id: uuid.UUID) -> bool:
        return bool(await self.session.scalar(select(exists().where(Account.id == account_id))))

    # --- the account's balance row: its lock and its gate ---------------------------------------------------

    async def lock_balance(self, account_id: uuid.UUID, now: datetime) -> CreditBalance:
        """The account's balance row, created at 0 when missing, locked and freshly read: the one lock of an
        account's credits. Every change of its grants and entries is made under it."""
        await self.session.execute(
            insert(CreditBalance)
            .values(account_id=account_id, balance=0, updated_at=now)
            .on_conflict_do_nothing(index_elements=[CreditBalance.account_id])
        )
        balance = await self.session.scalar(
            select(CreditBalance)
            .where(CreditBalance.account_id == account_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        assert balance is not None
        return balance

    async def take(self, account_id: uuid.UUID, amount: int, now: datetime) -> int | None:
        """The conditional update that makes a debit exact: the balance drops by `amount` only while it holds
        that much. The new balance, or None (nothing changed) when it does not."""
        return await self.session.scalar(
            update(CreditBalance)
            .where(CreditBalance.account_id == account_id, CreditBalance.balance >= amount)
            .values(balance=CreditBalance.balance - amount, updated_at=now)
            .returning(CreditBalance.balance)
            .execution_options(synchronize_session=False)
        )

    async def balance(self, account_id: uuid.UUID) -> int:
        """The balance row as it stands (under the lock: the balance every due start and expiry left)."""
        return int(await self.session.scalar(
            select(CreditBalance.balance).where(CreditBalance.account_id == account_id)
        ) or 0)

    async def give(self, account_id: uuid.UUID, amount: int, now: datetime) -> int:
        """Add `amount` (positive) to the balance; the new balance."""
        balance = await self.session.scalar(
            update(CreditBalance)
            .where(CreditBalance.account_id == account_id)
            .values(balance=CreditBalance.balance + amount, updated_at=now)
            .returning(CreditBalance.balance)
            .execution_options(synchronize_session=False)
        )
        assert balance is not None
        return int(balance)

    # --- grants ---------------------------------------------------------------------------------------------

    async def due_to_start(self, account_id: uuid.UUID, now: datetime) -> list[CreditGrant]:
        """Grants whose start has come and whose entry is not written yet."""
        stmt = (
            select(CreditGrant)
            .where(CreditGrant.account_id == account_id, CreditGrant.posted_at.is_(None),
                   CreditGrant.effective_at <= now)
            .order_by(CreditGrant.effective_at, CreditGrant.id)
        )
        return list((await self.session.scalars(stmt)).all())

    async def due_to_expire(self, account_id: uuid.UUID, now: datetime) -> list[CreditGrant]:
        """Started grants whose expiry has come and is not written off yet."""
        stmt = (
            select(CreditGrant)
            .where(
                CreditGrant.account_id == account_id,
                CreditGrant.posted_at.is_not(None),
                CreditGrant.expired_at.is_(None),
                CreditGrant.expires_at <= now,
            )
            .order_by(CreditGrant.expires_at, CreditGrant.id)
        )
        return list((await self.session.scalars(stmt)).all())

    async def burnable(self, account_id: uuid.UUID, now: datetime) -> list[CreditGrant]:
        """Live grants in the order a debit burns them."""
        stmt = select(CreditGrant).where(*_live(account_id, now)).order_by(*BURN_ORDER)
        return list((await self.session.scalars(stmt)).all())

    async def upcoming(self, account_id: uuid.UUID, now: datetime) -> list[CreditGrant]:
        stmt = (
            select(CreditGrant)
            .where(CreditGrant.account_id == account_id, CreditGrant.effective_at > now)
            .order_by(CreditGrant.effective_at, CreditGrant.id)
        )
        return list((await self.session.scalars(stmt)).all())

    async def live_balance(self, account_id: uuid.UUID, now: datetime) -> int:
        """The credits that count now, summed from the grants at once: what the balance is once every due start
        and expiry is written, so a read never waits for a writer (nor shows an expired credit)."""
        total = await self.session.scalar(
            select(func.coalesce(func.sum(CreditGrant.remaining), 0)).where(*_live(account_id, now))
        )
        return int(total or 0)

    async def plan_credits_left(
        self, account_id: uuid.UUID, subscription_id: uuid.UUID, *, ending_by: datetime, now: datetime
    ) -> list[CreditGrant]:
        """The subscription's live plan (and carried) credits that end by `ending_by`: the period before it."""
        stmt = (
            select(CreditGrant)
            .where(
                *_live(account_id, now),
                CreditGrant.subscription_id == subscription_id,
                CreditGrant.source.in_(("plan", "rollover")),
                CreditGrant.expires_at <= ending_by,
            )
            .order_by(*BURN_ORDER)
        )
        return list((await self.session.scalars(stmt)).all())

    async def grant_by_key(self, account_id: uuid.UUID, key: str) -> CreditGrant | None:
        return await self.session.scalar(
            select(CreditGrant).where(CreditGrant.account_id == account_id, CreditGrant.idempotency_key == key)
        )

    async def grant_of(self, account_id: uuid.UUID, grant_id: uuid.UUID) -> CreditGrant | None:
        return await self.session.scalar(
            select(CreditGrant).where(CreditGrant.account_id == account_id, CreditGrant.id == grant_id)
        )

    # --- entries --------------------------------------------------------------------------------------------

    async def entry_by_key(self, account_id: uuid.UUID, key: str) -> CreditEntry | None:
        return await self.session.scalar(
            select(CreditEntry).where(CreditEntry.account_id == account_id, CreditEntry.idempotency_key == key)
        )

    async def entry_of(self, account_id: uuid.UUID, entry_id: uuid.UUID) -> CreditEntry | None:
        return await self.session.scalar(
            select(CreditEntry).where(CreditEntry.account_id == account_id, CreditEntry.id == entry_id)
        )

    async def entry_starting(self, account_id: uuid.UUID, grant_id: uuid.UUID) -> CreditEntry | None:
        """The entry that started a grant (kind grant or refund), once written."""
        return await self.session.scalar(
            select(CreditEntry).where(
                CreditEntry.account_id == account_id,
                CreditEntry.grant_id == grant_id,
                CreditEntry.kind.in_(("grant", "refund")),
            )
        )

    async def refunded(self, account_id: uuid.UUID, entry_id: uuid.UUID) -> int:
        """Credits given back so far for the entry."""
        total = await self.session.scalar(
            select(func.coalesce(func.sum(CreditEntry.delta), 0)).where(
                CreditEntry.account_id == account_id, CreditEntry.refund_of == entry_id
            )
        )
        return int(total or 0)

    async def entries(self, account_id: uuid.UUID, *, before: uuid.UUID | None, limit: int) -> list[CreditEntry]:
        """Newest first; `before` is the cursor (the last id of the previous page)."""
        stmt = select(CreditEntry).where(CreditEntry.account_id == account_id).order_by(CreditEntry.id.desc())
        if before is not None:
            stmt = stmt.where(CreditEntry.id < before)
        return list((await self.session.scalars(stmt.limit(limit))).all())
