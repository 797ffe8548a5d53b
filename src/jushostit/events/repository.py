from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

CHANNEL = "jushostit_events"


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def publish(self, payload: dict[str, Any]) -> None:
        """NOTIFY is transactional: listeners on every API replica get it when this commits, never on rollback."""
        await self.session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": json.dumps(payload)}
        )
