"""A stream follows its caller's access at once, whatever its traffic (issue 8, point 5).

Database triggers announce every change that takes access away (a membership removed, a logout, a revoked API
key, a suspended user) on the access-change channel; the broker tells that user's streams to check their access
again at once: a stream with nothing left ends, one that lost an account stops its events. Every test keeps
events flowing (the bug was: access was checked only after 15 quiet seconds, so never while events flowed), and
acts through the API, so the triggers fire as in production. The control: a stream whose access did not change
stays open across heartbeats and access changes of its user that leave it access.
"""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import delete

from jushostit.events import endpoints
from jushostit.models import Account, Role
from tests.conftest import Signup
from tests.events.sse import Stream, events_flowing, open_stream
from tests.live import Live, eventually

WITHIN = 1.0  # seconds from the committed change to the stream's end


async def flowing_into(stream: Stream, account_id: str, count: int = 3) -> None:
    """The stream is receiving the account's events (so the change below happens while events flow)."""
    await eventually(lambda: len(stream.events(account_id=account_id)) >= count, f"{count} events of {account_id}")


async def ends_within_a_second(stream: Stream, changed_at: float) -> None:
    ended_at = await stream.wait_ended()
    assert ended_at - changed_at < WITHIN, f"the stream ended {ended_at - changed_at:.2f} s after the change"


async def a_member_of_only(live: Live, owner: Signup) -> Signup:
    """A member of the owner's account and of no other (their own account removed)."""
    member = await live.add_member(owner, Role.member)
    async with live.container.database.unit_of_work() as session:
        await session.execute(delete(Account).where(Account.id == uuid.UUID(member.account_id)))
    return member


async def test_a_removed_member_s_stream_ends_within_a_second_while_events_flow(live: Live) -> None:
    owner = await live.signup("Team Co")
    member = await a_member_of_only(live, owner)
    async with events_flowing(live, owner.account_id), open_stream(live.app, member.headers) as stream:
        await flowing_into(stream, owner.account_id)

        removed = await live.client.delete(f"/v1/accounts/{owner.account_id}/members/{member.user_id}",
                                           headers=owner.headers)
        changed_at = time.monotonic()

        assert removed.status_code == 204, removed.text
        await ends_within_a_second(stream, changed_at)


async def test_a_member_removed_from_one_account_stops_receiving_its_events_within_a_second(live: Live) -> None:
    owner = await live.signup("Team Co")
    member = await live.add_member(owner, Role.member)  # and owner of an account of their own
    async with events_flowing(live, owner.account_id, member.account_id), \
            open_stream(live.app, member.headers) as stream:
        await flowing_into(stream, owner.account_id)

        removed = await live.client.delete(f"/v1/accounts/{owner.account_id}/members/{member.user_id}",
                                           headers=owner.headers)
        changed_at = time.monotonic()

        assert removed.status_code == 204, removed.text
        # Their own account's events keep coming well after the second is over...
        await eventually(lambda: len(stream.events(since=changed_at + WITHIN, account_id=member.account_id)) >= 5,
                         "the member's own account's events after the removal")
        # ...while those of the account they left stopped within it.
        assert stream.events(since=changed_at + WITHIN, account_id=owner.account_id) == []
        assert not stream.ended


async def test_logging_out_ends_the_stream_within_a_second_while_events_flow(live: Live) -> None:
    owner = await live.signup("Stream Co")
    async with events_flowing(live, owner.account_id), open_stream(live.app, owner.headers) as stream:
        await flowing_into(stream, owner.account_id)

        logged_out = await live.client.post("/v1/auth/logout", headers=owner.headers)
        changed_at = time.monotonic()

        assert logged_out.status_code == 204, logged_out.text
        await ends_within_a_second(stream, changed_at)


async def test_a_revoked_api_key_s_stream_ends_within_a_second_while_events_flow(live: Live) -> None:
    owner = await live.signup("Key Co")
    created = await live.client.post("/v1/me/api-keys", json={"name": "watch", "scopes": ["instances:read"]},
                                     headers=owner.headers)
    assert created.status_code == 201, created.text
    key = created.json()
    async with events_flowing(live, owner.account_id), \
            open_stream(live.app, {"Authorization": f"Bearer {key['key']}"}) as stream:
        await flowing_into(stream, owner.account_id)

        revoked = await live.client.delete(f"/v1/me/api-keys/{key['id']}", headers=owner.headers)
        changed_at = time.monotonic()

        assert revoked.status_code == 200, revoked.text
        await ends_within_a_second(stream, changed_at)


async def test_suspending_the_user_ends_their_stream_within_a_second_while_events_flow(live: Live) -> None:
    admin = await live.admin()
    owner = await live.signup("Suspended Co")
    async with events_flowing(live, owner.account_id), open_stream(live.app, owner.headers) as stream:
        await flowing_into(stream, owner.account_id)

        suspended = await live.client.post(f"/v1/admin/users/{owner.user_id}/suspend", json={"note": "abuse"},
                                           headers=admin.headers)
        changed_at = time.monotonic()

        assert suspended.status_code == 200, suspended.text
        await ends_within_a_second(stream, changed_at)


@pytest.fixture
def quick_heartbeat(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(endpoints, "HEARTBEAT_SECONDS", 0.2)
    return 0.2


async def test_a_stream_whose_access_did_not_change_stays_open_across_heartbeats(live: Live,
                                                                                 quick_heartbeat: float) -> None:
    owner = await live.signup("Steady Co")
    other_login = await live.login(owner)  # a second session of the same user
    async with events_flowing(live, owner.account_id), open_stream(live.app, owner.headers) as stream:
        await flowing_into(stream, owner.account_id)
        # An access change of the same user that leaves this stream its access: the other session logs out.
        assert (await live.client.post("/v1/auth/logout", headers=other_login)).status_code == 204
        changed_at = time.monotonic()

        # Access is checked again at every heartbeat, events flowing or not; each check finds it unchanged.
        await eventually(lambda: stream.keep_alives(since=changed_at) >= 2 or stream.ended,
                         "two heartbeats after the other session's logout")
        last_beat = max(at for at, chunk in stream.chunks if chunk.startswith(": keep-alive"))
        await eventually(lambda: stream.events(since=last_beat, account_id=owner.account_id) or stream.ended,
                         "an event after the heartbeats")

        assert not stream.ended, stream.text[-500:]
        assert stream.keep_alives(since=changed_at) >= 2
