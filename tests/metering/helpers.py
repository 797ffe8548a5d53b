"""Usage charges as the aggregation records them (usage_daily), for tests of what the charges decide."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.models import UsageDaily


async def charged(session: AsyncSession, account_id: uuid.UUID | str, cost_minor: int, *,
                  day: date | None = None) -> None:
    """The account's usage charges this month are `cost_minor`, all on `day` (today by default)."""
    account = uuid.UUID(str(account_id))
    day = day or datetime.now(UTC).date()
    await session.execute(delete(UsageDaily).where(UsageDaily.account_id == account))
    session.add(UsageDaily(account_id=account, day=day, sources=["local"], quantities={}, breakdown={},
                           cost_minor=cost_minor, currency="EUR", updated_at=datetime.now(UTC)))
    await session.flush()
