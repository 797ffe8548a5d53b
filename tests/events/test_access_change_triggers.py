"""The database announces every change that may take a user's access away on the access-change channel, with
the user's id, whichever code makes it (migration 0008's triggers) — and nothing else, so a stream is not made
to check its access again for the touches of the hot path (an API key's last use, a sign-in time)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from sqlalchemy import delete, text, update

from jushostit.events.repository import ACCESS_CHANNEL
from jushostit.kit.db import libpq_url, utcnow
from jushostit.models import ApiKey, AuthSession, Membership, Role, User
from tests.live import Live

Change = Callable[[Any], Awaitable[Any]]


async def announced(live: Live, listener: psycopg.AsyncConnection[Any], change: Change) -> list[str]:
    """The user ids announced by committing `change`: everything the listener receives before a marker
    notified in a later transaction (notifications arrive in commit order)."""
    async with live.container.database.unit_of_work() as session:
        await change(session)
    marker = f"marker-{uuid.uuid4().hex}"
    async with live.container.database.unit_of_work() as session:
        await session.execute(text("SELECT pg_notify(:channel, :marker)"), {"channel": ACCESS_CHANNEL, "marker": marker})
    received = []
    async for notification in listener.notifies(timeout=10):
        if notification.payload == marker:
            return received
        received.append(notification.payload)
    raise AssertionError(f"the marker was not received within 10 s (received {received})")


async def test_every_change_that_takes_access_away_is_announced_with_the_user_s_id(live: Live) -> None:
    owner = await live.signup("Announced Co")
    member = await live.add_member(owner, Role.member)
    created = await live.client.post("/v1/me/api-keys", json={"name": "k", "scopes": ["account:read"]},
                                     headers=owner.headers)
    assert created.status_code == 201, created.text
    key_id = uuid.UUID(created.json()["id"])
    owner_id, member_id = uuid.UUID(owner.user_id), uuid.UUID(member.user_id)
    account_id = uuid.UUID(owner.account_id)
    now = utcnow()
    of_member = (Membership.account_id == account_id) & (Membership.user_id == member_id)

    async with await psycopg.AsyncConnection.connect(libpq_url(live.container.database_url),
                                                     autocommit=True) as listener:
        await listener.execute(f"LISTEN {ACCESS_CHANNEL}")

        async def expect(change: Change, users: list[uuid.UUID]) -> None:
            assert await announced(live, listener, change) == [str(u) for u in users]

        # The hot path's touches and changes that give access announce nothing.
        await expect(lambda s: s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now)), [])
        await expect(lambda s: s.execute(update(User).where(User.id == owner_id).values(last_login_at=now)), [])
        await expect(lambda s: s.execute(update(Membership).where(of_member).values(role=Role.member)), [])
        await expect(lambda s: s.execute(update(User).where(User.id == owner_id).values(suspended_at=None)), [])
        # What takes access away (or may: a role change) announces the user it concerns, once per transaction.
        await expect(lambda s: s.execute(update(Membership).where(of_member).values(role=Role.admin)), [member_id])
        await expect(lambda s: s.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=now)),
                     [owner_id])
        await expect(lambda s: s.execute(update(AuthSession).where(AuthSession.user_id == owner_id)
                                         .values(revoked_at=now, revoked_reason="logout")), [owner_id])
        await expect(lambda s: s.execute(update(User).where(User.id == owner_id).values(suspended_at=now)),
                     [owner_id])
        await expect(lambda s: s.execute(update(User).where(User.id == owner_id).values(suspended_at=now)), [])
        await expect(lambda s: s.execute(delete(Membership).where(of_member)), [member_id])
        await expect(lambda s: s.execute(delete(User).where(User.id == member_id)), [member_id])
