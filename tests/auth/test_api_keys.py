"""API keys: recognisable prefix, shown once, stored hashed, scoped, optionally expiring, revocable by the owner."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import time_machine
from sqlalchemy import func, select, text, update

from jushostit.models import Account, ApiKey, AuditEntry, User


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return body["error"]


async def create_key(
    client: httpx.AsyncClient, owner: Any, scopes: list[str], *, name: str = "ci", expires_at: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "scopes": scopes}
    if expires_at is not None:
        body["expires_at"] = expires_at
    response = await client.post("/v1/me/api-keys", json=body, headers=owner.headers)
    assert response.status_code == 201, response.text
    return response.json()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_create_shows_the_key_once_with_prefix_and_stores_only_its_hash(client, signup, session) -> None:
    user = await signup()
    created = await create_key(client, user, ["account:write", "account:read", "account:read"], name="  deploy  ")
    key = created["key"]
    assert key.startswith("jhi_") and len(key) > 40
    assert created["display_prefix"] == key[:12]
    assert created["name"] == "deploy"
    assert created["scopes"] == ["account:read", "account:write"]  # deduplicated, sorted
    assert created["expires_at"] is None and created["revoked_at"] is None

    listed = await client.get("/v1/me/api-keys", headers=user.headers)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [item["id"] for item in items] == [created["id"]]
    assert "key" not in items[0]
    assert items[0]["display_prefix"] == key[:12]
    assert key not in listed.text and key.removeprefix("jhi_") not in listed.text

    row = await session.get(ApiKey, uuid.UUID(created["id"]))
    assert row.token_hash == hashlib.sha256(key.encode()).hexdigest()
    dumped = (await session.execute(text("SELECT row_to_json(k)::text FROM api_keys k"))).scalars().all()
    assert all(key.removeprefix("jhi_") not in line for line in dumped)
    audit = await session.scalar(select(AuditEntry).where(AuditEntry.target_id == created["id"]))
    assert audit.action == "api_key.created" and audit.actor_id == uuid.UUID(user.user_id)
    assert key not in str(audit.after) and key.removeprefix("jhi_") not in str(audit.after)


async def test_the_key_authenticates_me_and_records_last_use(client, signup) -> None:
    user = await signup()
    created = await create_key(client, user, ["account:read"])
    assert created["last_used_at"] is None
    me = await client.get("/v1/me", headers=bearer(created["key"]))
    assert me.status_code == 200, me.text
    assert me.json()["user"]["id"] == user.user_id
    listed = (await client.get("/v1/me/api-keys", headers=user.headers)).json()["items"]
    assert listed[0]["last_used_at"] is not None


async def test_a_read_scope_key_reads_the_account_but_cannot_change_it(client, signup, session) -> None:
    user = await signup(account_name="Scoped Co")
    reader = (await create_key(client, user, ["account:read"]))["key"]

    got = await client.get(f"/v1/accounts/{user.account_id}", headers=bearer(reader))
    assert got.status_code == 200, got.text
    assert got.json()["name"] == "Scoped Co" and got.json()["role"] == "owner"

    patched = await client.patch(f"/v1/accounts/{user.account_id}", json={"name": "Hijacked"}, headers=bearer(reader))
    error = assert_error(patched, 403, "insufficient_scope")
    assert "account:write" in error["message"]
    account = await session.get(Account, uuid.UUID(user.account_id))
    await session.refresh(account)
    assert account.name == "Scoped Co"


async def test_a_write_scope_key_changes_the_account_but_needs_read_to_read_it(client, signup) -> None:
    user = await signup(account_name="Writer Co")
    writer = (await create_key(client, user, ["account:write"]))["key"]
    patched = await client.patch(f"/v1/accounts/{user.account_id}", json={"name": "Renamed"}, headers=bearer(writer))
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Renamed"
    assert_error(await client.get(f"/v1/accounts/{user.account_id}", headers=bearer(writer)), 403, "insufficient_scope")
    # A signed-in session holds every scope.
    assert (await client.get(f"/v1/accounts/{user.account_id}", headers=user.headers)).json()["name"] == "Renamed"


async def test_a_key_only_reaches_its_owners_accounts(client, signup) -> None:
    owner = await signup()
    stranger = await signup()
    key = (await create_key(client, owner, ["account:read", "account:write"]))["key"]
    assert_error(await client.get(f"/v1/accounts/{stranger.account_id}", headers=bearer(key)), 404, "not_found")
    assert_error(
        await client.patch(f"/v1/accounts/{stranger.account_id}", json={"name": "x"}, headers=bearer(key)),
        404,
        "not_found",
    )


async def test_an_api_key_cannot_manage_api_keys_or_log_out(client, signup, session) -> None:
    user = await signup()
    every_scope = [
        "account:read", "account:write", "members:read", "members:write", "billing:read", "billing:write",
        "instances:read", "instances:write", "instances:secrets",
    ]
    created = await create_key(client, user, every_scope)
    key = created["key"]
    keys_before = await session.scalar(select(func.count()).select_from(ApiKey))

    made = await client.post("/v1/me/api-keys", json={"name": "child", "scopes": ["account:read"]}, headers=bearer(key))
    assert_error(made, 403, "session_required")
    assert await session.scalar(select(func.count()).select_from(ApiKey)) == keys_before
    assert_error(await client.get("/v1/me/api-keys", headers=bearer(key)), 403, "session_required")
    assert_error(await client.delete(f"/v1/me/api-keys/{created['id']}", headers=bearer(key)), 403, "session_required")
    assert_error(await client.post("/v1/auth/logout", headers=bearer(key)), 403, "session_required")
    # The key was not revoked by its own attempt.
    assert (await client.get("/v1/me", headers=bearer(key))).status_code == 200


async def test_only_a_platform_admin_can_create_an_admin_scoped_key(client, signup, session) -> None:
    user = await signup()
    keys_before = await session.scalar(select(func.count()).select_from(ApiKey))
    refused = await client.post("/v1/me/api-keys", json={"name": "sneaky", "scopes": ["account:read", "admin"]},
                                headers=user.headers)
    assert_error(refused, 403, "admin_required")
    assert await session.scalar(select(func.count()).select_from(ApiKey)) == keys_before
    # A key made while the user was an admin carries no power once the flag is gone.
    await session.execute(update(User).where(User.id == uuid.UUID(user.user_id)).values(is_platform_admin=True))
    key = (await create_key(client, user, ["admin"]))["key"]
    await session.execute(update(User).where(User.id == uuid.UUID(user.user_id)).values(is_platform_admin=False))
    assert_error(await client.get("/v1/admin/audit", headers=bearer(key)), 403, "admin_required")


async def test_an_admins_key_needs_the_admin_scope_for_admin_routes(client, signup, session) -> None:
    admin = await signup()
    await session.execute(update(User).where(User.id == uuid.UUID(admin.user_id)).values(is_platform_admin=True))
    plain = (await create_key(client, admin, ["account:read"]))["key"]
    scoped = (await create_key(client, admin, ["admin"]))["key"]
    assert_error(await client.get("/v1/admin/audit", headers=bearer(plain)), 403, "admin_required")
    assert (await client.get("/v1/admin/audit", headers=bearer(scoped))).status_code == 200
    assert (await client.get("/v1/admin/audit", headers=admin.headers)).status_code == 200


async def test_revoked_key_is_refused(client, signup, session) -> None:
    user = await signup()
    doomed = await create_key(client, user, ["account:read"], name="doomed")
    kept = await create_key(client, user, ["account:read"], name="kept")
    assert (await client.get("/v1/me", headers=bearer(doomed["key"]))).status_code == 200

    revoked = await client.delete(f"/v1/me/api-keys/{doomed['id']}", headers=user.headers)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    assert "key" not in revoked.json()

    refused = await client.get("/v1/me", headers=bearer(doomed["key"]))
    assert_error(refused, 401, "unauthorized")
    assert refused.headers["www-authenticate"] == "Bearer"
    assert_error(await client.get(f"/v1/accounts/{user.account_id}", headers=bearer(doomed["key"])), 401, "unauthorized")
    assert (await client.get("/v1/me", headers=bearer(kept["key"]))).status_code == 200

    # Revoking again changes nothing and audits nothing new.
    again = await client.delete(f"/v1/me/api-keys/{doomed['id']}", headers=user.headers)
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
    audits = await session.scalar(
        select(func.count()).select_from(AuditEntry).where(
            AuditEntry.target_id == doomed["id"], AuditEntry.action == "api_key.revoked"
        )
    )
    assert audits == 1
    listed = {item["id"]: item for item in (await client.get("/v1/me/api-keys", headers=user.headers)).json()["items"]}
    assert listed[doomed["id"]]["revoked_at"] is not None and listed[kept["id"]]["revoked_at"] is None


async def test_an_expiry_in_the_past_is_refused_at_creation(client, signup, session) -> None:
    user = await signup()
    keys_before = await session.scalar(select(func.count()).select_from(ApiKey))
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    response = await client.post(
        "/v1/me/api-keys", json={"name": "old", "scopes": ["account:read"], "expires_at": past}, headers=user.headers
    )
    assert_error(response, 400, "invalid_expiry")
    assert await session.scalar(select(func.count()).select_from(ApiKey)) == keys_before


async def test_an_expiry_without_a_timezone_is_422_not_500(client, signup, session) -> None:
    user = await signup()
    keys_before = await session.scalar(select(func.count()).select_from(ApiKey))
    response = await client.post(
        "/v1/me/api-keys",
        json={"name": "naive", "scopes": ["account:read"], "expires_at": "2099-01-01T00:00:00"},
        headers=user.headers,
    )
    error = assert_error(response, 422, "validation_error")
    assert error["details"][0]["loc"][-1] == "expires_at"
    assert await session.scalar(select(func.count()).select_from(ApiKey)) == keys_before


async def test_a_key_past_its_expiry_is_refused(client, signup) -> None:
    user = await signup()
    expires = datetime.now(UTC) + timedelta(days=1)
    created = await create_key(client, user, ["account:read"], expires_at=expires.isoformat())
    assert datetime.fromisoformat(created["expires_at"]) == expires
    with time_machine.travel(expires - timedelta(seconds=5), tick=False):
        assert (await client.get("/v1/me", headers=bearer(created["key"]))).status_code == 200
    with time_machine.travel(expires + timedelta(seconds=1), tick=False):
        assert_error(await client.get("/v1/me", headers=bearer(created["key"])), 401, "unauthorized")
        assert_error(
            await client.get(f"/v1/accounts/{user.account_id}", headers=bearer(created["key"])), 401, "unauthorized"
        )


async def test_expiry_with_an_offset_is_understood(client, signup) -> None:
    user = await signup()
    created = await create_key(client, user, ["account:read"], expires_at="2099-06-01T12:00:00+02:00")
    assert datetime.fromisoformat(created["expires_at"]) == datetime(2099, 6, 1, 10, 0, tzinfo=UTC)


async def test_another_users_key_cannot_be_revoked(client, signup, session) -> None:
    owner = await signup()
    other = await signup()
    key = await create_key(client, owner, ["account:read"])
    response = await client.delete(f"/v1/me/api-keys/{key['id']}", headers=other.headers)
    assert_error(response, 404, "not_found")
    row = await session.get(ApiKey, uuid.UUID(key["id"]))
    await session.refresh(row)
    assert row.revoked_at is None
    assert (await client.get("/v1/me", headers=bearer(key["key"]))).status_code == 200
    # Nor is it listed to them.
    assert (await client.get("/v1/me/api-keys", headers=other.headers)).json()["items"] == []


@pytest.mark.parametrize("key_id", ["0190f0c4-1e2d-7000-8000-000000000001", "not-a-uuid"], ids=["unknown", "malformed"])
async def test_unknown_key_id_is_404(client, signup, key_id) -> None:
    user = await signup()
    assert_error(await client.delete(f"/v1/me/api-keys/{key_id}", headers=user.headers), 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "k", "scopes": ["root"]},
        {"name": "k", "scopes": ["account:read", "everything"]},
        {"name": "k", "scopes": []},
        {"name": "k", "scopes": "account:read"},
        {"name": "", "scopes": ["account:read"]},
        {"name": "k"},
        {"name": "k", "scopes": ["account:read"], "user_id": "0190f0c4-1e2d-7000-8000-000000000002"},
        {"name": "k", "scopes": ["account:read"], "token_hash": "0" * 64},
        {"name": "k", "scopes": ["account:read"], "expires_at": "tomorrow"},
        {"name": "k", "scopes": ["account:read"], "expires_at": True},
    ],
    ids=[
        "unknown-scope", "one-unknown-scope", "no-scopes", "scopes-not-a-list", "empty-name", "missing-scopes",
        "mass-assign-user", "mass-assign-hash", "expiry-not-a-date", "expiry-a-bool",
    ],
)
async def test_invalid_create_requests_are_422(client, signup, session, body) -> None:
    user = await signup()
    keys_before = await session.scalar(select(func.count()).select_from(ApiKey))
    error = assert_error(await client.post("/v1/me/api-keys", json=body, headers=user.headers), 422, "validation_error")
    assert error["details"]
    assert await session.scalar(select(func.count()).select_from(ApiKey)) == keys_before


async def test_create_and_list_need_a_signed_in_caller(client) -> None:
    assert_error(await client.post("/v1/me/api-keys", json={"name": "k", "scopes": ["account:read"]}), 401, "unauthorized")
    assert_error(await client.get("/v1/me/api-keys"), 401, "unauthorized")
    assert_error(await client.delete(f"/v1/me/api-keys/{uuid.uuid4()}"), 401, "unauthorized")


async def test_list_pages_through_keys(client, signup) -> None:
    user = await signup()
    made = {(await create_key(client, user, ["account:read"], name=f"k{i}"))["id"] for i in range(3)}
    first = (await client.get("/v1/me/api-keys?limit=2", headers=user.headers)).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = (await client.get(f"/v1/me/api-keys?limit=2&cursor={first['next_cursor']}", headers=user.headers)).json()
    assert len(second["items"]) == 1 and second["next_cursor"] is None
    assert {item["id"] for item in first["items"] + second["items"]} == made
