from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

CHANNEL = "jushostit_events"
# Database triggers (migration 0008) notify it with a user's id whenever that user's access may have shrunk: a
# membership deleted or its role changed, a login session or API key revoked, the user suspended or deleted.
ACCESS_CHANNEL = "jushostit_access"

# Open streams per user, counted across API processes: each open stream holds one of the user's slots, a
# session-level advisory lock on its broker's connection (released when the stream ends, or by PostgreSQL when
# that process or connection dies). Run with psycopg on the broker's own connection, not through a session.
TRY_STREAM_SLOT = "SELECT pg_try_advisory_lock(%s)"
RELEASE_STREAM_SLOT = "SELECT pg_advisory_unlock(%s)"


def stream_slot_key(user_id: str, slot: int) -> int:
    """The advisory-lock key (a signed bigint) of one of a user's stream slots."""
    digest = hashlib.blake2b(f"jushostit-sse:{user_id}:{slot}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def publish(self, payload: dict[str, Any]) -> None:
        """NOTIFY is transactional: listeners on every API replica get it when this commits, never on rollback."""
        await self.session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": json.dumps(payload)}
        )

