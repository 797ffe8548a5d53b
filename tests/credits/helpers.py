"""Small helpers shared by the credits tests."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select

from jushostit.credits.repository import CreditsRepository
from jushostit.kit.db import utcnow
from jushostit.models import Account, AuditEntry, CreditBalance, CreditEntry, CreditGrant


async def new_account(session, name: str = "Credits Co") -> uuid.UUID:
    account = Account(name=name)
    session.add(account)
    await session.flush()
    return account.id


async def entries_of(session, account_id: uuid.UUID) -> list[CreditEntry]:
    stmt = select(CreditEntry).where(CreditEntry.account_id == account_id).order_by(CreditEntry.id)
    return list((await session.scalars(stmt.execution_options(populate_existing=True))).all())


async def grant_row(session, grant_id: uuid.UUID) -> CreditGrant:
    found = await session.get(CreditGrant, grant_id, populate_existing=True)
    assert found is not None
    return found


async def assert_ledger_agrees(session, account_id: uuid.UUID, balance: int, now: datetime | None = None) -> None:
    """Right after a change: the balance row, the sum of the ledger's deltas, the last entry's balance after, the
    sum of live grants and the balance a reader is shown are one number."""
    now = now or utcnow()
    row = await session.scalar(select(CreditBalance.balance).where(CreditBalance.account_id == account_id))
    ledger = await session.scalar(
        select(func.coalesce(func.sum(CreditEntry.delta), 0)).where(CreditEntry.account_id == account_id)
    )
    entries = await entries_of(session, account_id)
    posted = await session.scalar(
        select(func.coalesce(func.sum(CreditGrant.remaining), 0)).where(
            CreditGrant.account_id == account_id, CreditGrant.posted_at.is_not(None),
            CreditGrant.expired_at.is_(None),
        )
    )
    shown = await CreditsRepository(session).live_balance(account_id, now)
    assert (row, ledger, entries[-1].balance_after, posted, shown) == (balance,) * 5


async def audit_actions(session, account_id: uuid.UUID) -> list[str]:
    stmt = select(AuditEntry.action).where(AuditEntry.account_id == account_id).order_by(AuditEntry.seq)
    return list((await session.scalars(stmt)).all())
