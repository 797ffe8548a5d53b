"""The audit log: what real flows write, the hash chain, the append-only triggers, `verify`, the admin listing."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit_service
from jushostit.audit.chain import GENESIS, entry_hash
from jushostit.models import AuditEntry, EmailOutbox, User
from tests.conftest import TEST_PASSWORD, complete_sign_up, newest_email_body

CLIENT_IP = "203.0.113.7"  # what tests.conftest.asgi_client presents as the peer address


async def _head_seq(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.coalesce(func.max(AuditEntry.seq), 0))) or 0)


async def _entries_after(session: AsyncSession, seq: int) -> list[AuditEntry]:
    session.expire_all()
    return list((await session.scalars(select(AuditEntry).where(AuditEntry.seq > seq).order_by(AuditEntry.seq))).all())


def _one(entries: list[AuditEntry], action: str) -> AuditEntry:
    found = [e for e in entries if e.action == action]
    assert len(found) == 1, f"expected one {action!r} entry, got {[e.action for e in entries]}"
    return found[0]


def _assert_request_facts(entry: AuditEntry, response: Any, started: datetime, ended: datetime) -> None:
    request_id = response.headers["x-request-id"]
    assert request_id and entry.request_id == request_id
    assert entry.ip == CLIENT_IP
    assert started <= entry.created_at <= ended
    assert entry.created_at.tzinfo is not None


async def _signup(
    client: Any, session: AsyncSession, email: str, account_name: str = "Audit Co"
) -> tuple[dict[str, Any], Any]:
    response = await client.post(
        "/v1/auth/signup", json={"email": email, "password": TEST_PASSWORD, "account_name": account_name}
    )
    assert response.status_code == 202, response.text
    who = await complete_sign_up(client, lambda to, template: newest_email_body(session, to, template), email.lower())
    body = {"user": {"id": who.user_id}, "account": {"id": who.account_id},
            "access_token": who.access_token, "refresh_token": who.refresh_token}
    return body, response


def _bearer(body: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {body['access_token']}"}


async def _invite_token(session: AsyncSession, email: str) -> str:
    mail = await session.scalar(
        select(EmailOutbox).where(EmailOutbox.to_address == email, EmailOutbox.template == "invite")
    )
    assert mail is not None
    match = re.search(r"token=([A-Za-z0-9_\-]+)", mail.body)
    assert match
    return match.group(1)


async def _make_admin(session: AsyncSession, user_id: str) -> None:
    await session.execute(update(User).where(User.id == uuid.UUID(user_id)).values(is_platform_admin=True))
    await session.flush()


# --- entries written by real flows ------------------------------------------------------------------------


async def test_signup_entries_carry_actor_target_after_ip_request_id_and_time(client, session) -> None:
    head = await _head_seq(session)
    started = datetime.now(UTC)
    body, response = await _signup(client, session, "Audited.Signup@Example.com", "Signup Co")
    ended = datetime.now(UTC)
    user_id, account_id = uuid.UUID(body["user"]["id"]), uuid.UUID(body["account"]["id"])

    entries = await _entries_after(session, head)
    signup = _one(entries, "user.signup")
    assert (signup.actor_type, signup.actor_id) == ("user", user_id)
    assert (signup.target_type, signup.target_id) == ("user", str(user_id))
    assert signup.account_id == account_id
    assert signup.before is None
    assert signup.after == {"email": "audited.signup@example.com", "account_name": "Signup Co"}
    _assert_request_facts(signup, response, started, ended)

    created = _one(entries, "account.created")
    assert (created.actor_type, created.actor_id) == ("user", user_id)
    assert (created.target_type, created.target_id, created.account_id) == ("account", str(account_id), account_id)
    assert created.after == {"name": "Signup Co", "owner": str(user_id), "billing_mode": "free"}
    _assert_request_facts(created, response, started, ended)
    # Nothing secret in the summary: no password, no hash, no token.
    for entry in entries:
        dumped = repr((entry.before, entry.after))
        assert TEST_PASSWORD not in dumped and "argon2" not in dumped
        assert body["access_token"] not in dumped and body["refresh_token"] not in dumped


async def test_invite_and_role_change_entries(client, session) -> None:
    owner, _ = await _signup(client, session, "owner-audit@example.com", "Team Audit")
    invitee, _ = await _signup(client, session, "invitee-audit@example.com", "Invitee Own")
    owner_id, account_id = uuid.UUID(owner["user"]["id"]), uuid.UUID(owner["account"]["id"])
    invitee_id = uuid.UUID(invitee["user"]["id"])
    head = await _head_seq(session)

    started = datetime.now(UTC)
    invited = await client.post(
        f"/v1/accounts/{account_id}/invites",
        json={"email": "invitee-audit@example.com", "role": "member"},
        headers=_bearer(owner),
    )
    assert invited.status_code == 201, invited.text
    token = await _invite_token(session, "invitee-audit@example.com")
    accepted = await client.post("/v1/invites/accept", json={"token": token}, headers=_bearer(invitee))
    assert accepted.status_code == 200, accepted.text
    changed = await client.patch(
        f"/v1/accounts/{account_id}/members/{invitee_id}", json={"role": "admin"}, headers=_bearer(owner)
    )
    assert changed.status_code == 200, changed.text
    ended = datetime.now(UTC)

    entries = await _entries_after(session, head)
    assert [e.action for e in entries] == ["invite.created", "invite.accepted", "member.role_changed"]
    created, accept, role = entries
    assert (created.actor_type, created.actor_id) == ("user", owner_id)
    assert (created.target_type, created.target_id) == ("invite", invited.json()["id"])
    assert created.account_id == account_id
    assert created.before is None and created.after == {"email": "invitee-audit@example.com", "role": "member"}
    assert token not in repr(created.after)
    _assert_request_facts(created, invited, started, ended)

    assert (accept.actor_type, accept.actor_id) == ("user", invitee_id)
    assert accept.after == {"user_id": str(invitee_id), "role": "member"}
    _assert_request_facts(accept, accepted, started, ended)

    assert (role.actor_type, role.actor_id) == ("user", owner_id)
    assert (role.target_type, role.target_id, role.account_id) == ("user", str(invitee_id), account_id)
    assert role.before == {"role": "member"} and role.after == {"role": "admin"}
    _assert_request_facts(role, changed, started, ended)
    # Each request got its own id.
    assert len({created.request_id, accept.request_id, role.request_id}) == 3


async def test_api_key_creation_entry_names_the_key_without_its_secret(client, session) -> None:
    user, _ = await _signup(client, session, "keys-audit@example.com")
    head = await _head_seq(session)
    started = datetime.now(UTC)
    response = await client.post(
        "/v1/me/api-keys",
        json={"name": "deploy bot", "scopes": ["account:read", "members:read"]},
        headers={**_bearer(user), "X-Request-Id": "req-audit-key-1"},
    )
    ended = datetime.now(UTC)
    assert response.status_code == 201, response.text
    assert response.headers["x-request-id"] == "req-audit-key-1"  # a sane incoming id is kept end to end
    key = response.json()

    entry = _one(await _entries_after(session, head), "api_key.created")
    assert (entry.actor_type, entry.actor_id) == ("user", uuid.UUID(user["user"]["id"]))
    assert (entry.target_type, entry.target_id) == ("api_key", key["id"])
    assert entry.after == {"name": "deploy bot", "scopes": ["account:read", "members:read"], "expires_at": None}
    assert key["key"] not in repr(entry.after)
    _assert_request_facts(entry, response, started, ended)


async def test_refused_request_leaves_no_entry(client, session) -> None:
    """Entries are written in the transaction of the change: a refused change rolls its entry back too."""
    owner, _ = await _signup(client, session, "last-owner@example.com")
    head = await _head_seq(session)
    response = await client.patch(
        f"/v1/accounts/{owner['account']['id']}/members/{owner['user']['id']}",
        json={"role": "member"},
        headers=_bearer(owner),
    )
    assert response.status_code == 409 and response.json()["error"]["code"] == "last_owner"
    assert await _entries_after(session, head) == []


async def test_repeated_login_failures_are_audited_even_though_the_request_fails(client, session, settings) -> None:
    await _signup(client, session, "guessed@example.com")
    head = await _head_seq(session)
    threshold = settings.login_failures_audit_threshold
    responses = [
        await client.post("/v1/auth/login", json={"email": "guessed@example.com", "password": "not the password"})
        for _ in range(threshold)
    ]
    assert [r.status_code for r in responses] == [401] * threshold
    entries = await _entries_after(session, head)
    entry = _one(entries, "auth.login_failures_exceeded")
    assert [e.action for e in entries] == ["auth.login_failures_exceeded"]  # once, at the threshold
    assert (entry.actor_type, entry.actor_id) == ("anonymous", None)
    assert entry.after == {"email": "guessed@example.com", "failures": threshold}
    assert entry.request_id == responses[-1].headers["x-request-id"] and entry.ip == CLIENT_IP
    assert "not the password" not in repr(entry.after)


# --- the chain ----------------------------------------------------------------------------------------------


async def test_seq_is_contiguous_and_each_entry_links_to_the_previous_hash(client, session) -> None:
    head = await _head_seq(session)
    previous_hash = await session.scalar(select(AuditEntry.hash).where(AuditEntry.seq == head)) if head else None
    for n in range(3):
        await _signup(client, session, f"chain-{n}@example.com")
    entries = await _entries_after(session, head)
    assert len(entries) >= 6  # user.signup + account.created per signup
    assert [e.seq for e in entries] == list(range(head + 1, head + 1 + len(entries)))
    expected_prev = previous_hash or GENESIS
    for entry in entries:
        assert entry.prev_hash == expected_prev
        assert re.fullmatch(r"[0-9a-f]{64}", entry.hash)
        assert entry.hash == entry_hash(entry.prev_hash, audit_service._hashed_fields(entry))
        expected_prev = entry.hash
    assert len({e.hash for e in entries}) == len(entries)


async def test_verify_passes_on_an_intact_chain(client, session) -> None:
    await _signup(client, session, "intact@example.com")
    assert await _head_seq(session) > 0
    seen: list[int] = []
    assert await audit_service.verify(session, progress=seen.append) is None
    assert seen == list(range(1, await _head_seq(session) + 1))


async def _tamper(session: AsyncSession, sql: str, **params: Any) -> None:
    """What a superuser can do by hand: disable triggers for this transaction and edit the table."""
    await session.execute(text("SET LOCAL session_replication_role = replica"))
    await session.execute(text(sql), params)
    session.expire_all()  # forget what this session loaded before the edit, as a fresh `audit verify` would


async def test_verify_names_the_first_altered_entry(client, session) -> None:
    for n in range(2):
        await _signup(client, session, f"tamper-{n}@example.com")
    assert await audit_service.verify(session) is None
    head = await _head_seq(session)
    victim = head - 2  # not the last one, so later entries still link to its original hash
    await _tamper(
        session,
        "UPDATE audit_entries SET after = jsonb_build_object('email', 'mallory@example.com') WHERE seq = :seq",
        seq=victim,
    )
    problem = await audit_service.verify(session)
    assert problem is not None
    assert problem.seq == victim
    assert "altered" in problem.problem


async def test_verify_names_an_entry_whose_hash_was_recomputed_by_the_forger(client, session) -> None:
    """Rewriting an entry and its own hash still breaks the link from the entry after it."""
    for n in range(2):
        await _signup(client, session, f"forger-{n}@example.com")
    head = await _head_seq(session)
    victim = head - 1
    entry = await session.scalar(select(AuditEntry).where(AuditEntry.seq == victim))
    forged_fields = {**audit_service._hashed_fields(entry), "ip": "198.51.100.66"}
    forged_hash = entry_hash(entry.prev_hash, forged_fields)
    await _tamper(
        session, "UPDATE audit_entries SET ip = '198.51.100.66', hash = :h WHERE seq = :seq", h=forged_hash, seq=victim
    )
    problem = await audit_service.verify(session)
    assert problem is not None
    assert problem.seq == head and "previous-hash" in problem.problem


async def test_verify_names_a_deleted_entry(client, session) -> None:
    await _signup(client, session, "deleted@example.com")
    head = await _head_seq(session)
    await _tamper(session, "DELETE FROM audit_entries WHERE seq = :seq", seq=head - 1)
    problem = await audit_service.verify(session)
    assert problem is not None
    assert problem.seq == head - 1 and "missing" in problem.problem


# --- append-only at the database ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "sql"),
    [
        ("UPDATE", "UPDATE audit_entries SET action = 'nothing.happened' WHERE seq = :seq"),
        ("DELETE", "DELETE FROM audit_entries WHERE seq = :seq"),
        ("TRUNCATE", "TRUNCATE audit_entries"),
    ],
)
async def test_triggers_refuse_changes(client, session, operation: str, sql: str) -> None:
    await _signup(client, session, f"append-only-{operation.lower()}@example.com")
    head = await _head_seq(session)
    before = await session.scalar(select(AuditEntry.hash).where(AuditEntry.seq == head))
    count = await session.scalar(select(func.count()).select_from(AuditEntry))
    with pytest.raises(DBAPIError, match=f"append-only \\({operation} refused\\)"):
        async with session.begin_nested():
            await session.execute(text(sql), {"seq": head} if ":seq" in sql else {})
    # The test transaction survived and nothing changed.
    session.expire_all()
    assert await session.scalar(select(func.count()).select_from(AuditEntry)) == count
    row = await session.scalar(select(AuditEntry).where(AuditEntry.seq == head))
    assert row is not None and row.hash == before and row.action != "nothing.happened"
    assert await audit_service.verify(session) is None


# --- the admin listing --------------------------------------------------------------------------------------


async def test_admin_lists_with_filters(client, session) -> None:
    admin, _ = await _signup(client, session, "audit-admin@example.com", "Admin Own")
    await _make_admin(session, admin["user"]["id"])
    first, _ = await _signup(client, session, "list-first@example.com", "First Co")
    middle = datetime.now(UTC)
    second, _ = await _signup(client, session, "list-second@example.com", "Second Co")
    key = await client.post("/v1/me/api-keys", json={"name": "k", "scopes": ["account:read"]}, headers=_bearer(second))
    assert key.status_code == 201
    headers = _bearer(admin)

    async def listing(**params: Any) -> list[dict[str, Any]]:
        response = await client.get("/v1/admin/audit", params={"limit": 200, **params}, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["items"]

    by_account = await listing(account_id=first["account"]["id"])
    assert {e["action"] for e in by_account} == {"user.signup", "account.created"}
    assert all(e["account_id"] == first["account"]["id"] for e in by_account)
    assert [e["seq"] for e in by_account] == sorted((e["seq"] for e in by_account), reverse=True)  # newest first

    by_actor = await listing(actor_id=second["user"]["id"])
    assert {e["action"] for e in by_actor} == {"user.signup", "user.email_verified", "account.created",
                                               "api_key.created"}
    assert all(e["actor_id"] == second["user"]["id"] and e["actor_type"] == "user" for e in by_actor)

    keys = await listing(action="api_key.created", actor_id=second["user"]["id"])
    assert [e["target_id"] for e in keys] == [key.json()["id"]]
    assert keys[0]["request_id"] == key.headers["x-request-id"] and keys[0]["ip"] == CLIENT_IP

    signups = await listing(action="user.signup", since=middle.isoformat())
    assert [e["after"]["email"] for e in signups] == ["list-second@example.com"]
    earlier = await listing(action="user.signup", until=middle.isoformat(), actor_id=first["user"]["id"])
    assert [e["after"]["email"] for e in earlier] == ["list-first@example.com"]
    assert await listing(action="user.signup", until=middle.isoformat(), actor_id=second["user"]["id"]) == []

    target = await listing(target_id=first["user"]["id"])
    assert {e["action"] for e in target} == {"user.signup", "user.email_verified"}


async def test_admin_listing_paginates_without_overlap(client, session) -> None:
    admin, _ = await _signup(client, session, "pager-admin@example.com")
    await _make_admin(session, admin["user"]["id"])
    owner, _ = await _signup(client, session, "pager-owner@example.com", "Pager Co")
    for n in range(3):  # 2 entries from the signup + 3 invites = 5 entries for this account
        response = await client.post(
            f"/v1/accounts/{owner['account']['id']}/invites",
            json={"email": f"pager-{n}@example.com"},
            headers=_bearer(owner),
        )
        assert response.status_code == 201
    expected = (
        await session.scalars(
            select(AuditEntry.seq)
            .where(AuditEntry.account_id == uuid.UUID(owner["account"]["id"]))
            .order_by(AuditEntry.seq.desc())
        )
    ).all()
    assert len(expected) == 5

    pages: list[list[int]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"account_id": owner["account"]["id"], "limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/v1/admin/audit", params=params, headers=_bearer(admin))
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append([e["seq"] for e in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 10, "pagination does not end"
    assert [len(p) for p in pages] == [2, 2, 1]
    flat = [seq for page in pages for seq in page]
    assert flat == list(expected)  # complete, ordered, and no entry on two pages
    assert len(set(flat)) == len(flat)

    bad = await client.get("/v1/admin/audit", params={"cursor": "not-a-cursor!"}, headers=_bearer(admin))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cursor"


async def test_admin_listing_is_refused_to_non_admins(client, session) -> None:
    member, _ = await _signup(client, session, "not-admin@example.com")
    anonymous = await client.get("/v1/admin/audit")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    refused = await client.get("/v1/admin/audit", headers=_bearer(member))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required"
    # An admin's API key without the admin scope is refused as well.
    await _make_admin(session, member["user"]["id"])
    key = await client.post("/v1/me/api-keys", json={"name": "ro", "scopes": ["account:read"]}, headers=_bearer(member))
    assert key.status_code == 201
    scoped = await client.get("/v1/admin/audit", headers={"Authorization": f"Bearer {key.json()['key']}"})
    assert scoped.status_code == 403
    allowed = await client.get("/v1/admin/audit", headers=_bearer(member))
    assert allowed.status_code == 200 and allowed.json()["items"]
