"""The balance never goes negative under concurrency (issue 9 §9): real transactions on separate connections of
the real PostgreSQL, committed, no shared session."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from jushostit.credits import service as credits
from jushostit.kit.db import create_engine
from jushostit.kit.errors import Conflict
from jushostit.models import Account, CreditEntry, CreditGrant
from tests.credits.helpers import assert_ledger_agrees

DEBITS = 500
BALANCE = 100
POOL = 20  # connections (and as many again in overflow): far fewer than the debits, as in a real deployment


async def test_500_concurrent_one_unit_debits_of_a_balance_of_100_succeed_exactly_100_times(settings) -> None:
    engine = create_engine(settings.database_url, pool_size=POOL)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    account_id = uuid.uuid4()
    try:
        async with sessions() as s, s.begin():
            s.add(Account(id=account_id, name="Concurrent Credits"))
        async with sessions() as s, s.begin():
            await credits.grant(s, account_id=account_id, amount=BALANCE, reason="prepaid")

        async def one_debit(n: int) -> str:
            async with sessions() as s:
                try:
                    async with s.begin():  # its own transaction on its own connection, committed or rolled back
                        await credits.debit(s, account_id=account_id, amount=1, reason="usage", reference=f"u-{n}")
                except Conflict as refused:
                    return refused.code
                return "debited"

        outcomes = await asyncio.gather(*(one_debit(n) for n in range(DEBITS)))

        assert outcomes.count("debited") == BALANCE
        assert outcomes.count("insufficient_credits") == DEBITS - BALANCE
        async with sessions() as s:
            await assert_ledger_agrees(s, account_id, 0)
            debits = await s.scalar(select(func.count()).select_from(CreditEntry).where(
                CreditEntry.account_id == account_id, CreditEntry.kind == "debit"))
            assert debits == BALANCE
            # Each debit's balance after is distinct: 99 down to 0, one step each.
            afters = (await s.scalars(select(CreditEntry.balance_after).where(
                CreditEntry.account_id == account_id, CreditEntry.kind == "debit"))).all()
            assert sorted(afters) == list(range(BALANCE))
            assert await s.scalar(select(CreditGrant.remaining).where(CreditGrant.account_id == account_id)) == 0
    finally:
        async with sessions() as s, s.begin():
            await s.execute(delete(Account).where(Account.id == account_id))  # the ledger goes with it
        await engine.dispose()
