"""A platform admin suspends a user: every token and API key of theirs answers 401 `user_suspended` until the
admin unsuspends them, which restores the same sessions and keys. Only platform admins may do it, never to
themselves, and each change is audited in the same transaction. (Their open event streams end at once:
tests/events/test_sse_access.py.)"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from jushostit.models import AuditEntry, User
from tests.conftest import TEST_PASSWORD, token_in


async def test_a_suspended_user_gets_401_user_suspended_with_a_token_and_an_api_key_until_unsuspended(
    client, session, signup, admin
) -> None:
    operator = await admin()
    customer = await signup()
    created = await client.post("/v1/me/api-keys", json={"name": "ci", "scopes": ["account:read"]},
                                headers=customer.headers)
    assert created.status_code == 201, created.text
    by_key = {"Authorization": f"Bearer {created.json()['key']}"}
    account = f"/v1/accounts/{customer.account_id}"

    suspended = await client.post(f"/v1/admin/users/{customer.user_id}/suspend", json={}, headers=operator.headers)

    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["id"] == customer.user_id and suspended.json()["suspended_at"] is not None
    for headers in (customer.headers, by_key):
        for method, path in (("GET", "/v1/me"), ("GET", account), ("GET", "/v1/events")):
            refused = await client.request(method, path, headers=headers)
            assert refused.status_code == 401, (method, path, refused.text)
            assert refused.json()["error"]["code"] == "user_suspended", refused.json()
            assert refused.headers["www-authenticate"] == "Bearer"

    restored = await client.post(f"/v1/admin/users/{customer.user_id}/unsuspend", headers=operator.headers)

    assert restored.status_code == 200 and restored.json()["suspended_at"] is None, restored.text
    for headers in (customer.headers, by_key):
        assert (await client.get(account, headers=headers)).status_code == 200
    assert (await client.get("/v1/me", headers=customer.headers)).status_code == 200


async def test_only_platform_admins_suspend_or_unsuspend_users(client, session, signup, admin) -> None:
    operator = await admin()
    customer = await signup()
    other = await signup()
    for action in ("suspend", "unsuspend"):
        refused = await client.post(f"/v1/admin/users/{other.user_id}/{action}", json={}, headers=customer.headers)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required", refused.text
    assert (await session.get(User, uuid.UUID(other.user_id), populate_existing=True)).suspended_at is None
    assert (await client.get("/v1/me", headers=other.headers)).status_code == 200

    # The control: the platform admin's same request goes through.
    done = await client.post(f"/v1/admin/users/{other.user_id}/suspend", json={}, headers=operator.headers)
    assert done.status_code == 200, done.text


async def test_suspending_and_unsuspending_a_user_is_audited(client, session, signup, admin) -> None:
    operator = await admin()
    customer = await signup()

    await client.post(f"/v1/admin/users/{customer.user_id}/suspend", json={"note": "chargeback"},
                      headers=operator.headers)
    again = await client.post(f"/v1/admin/users/{customer.user_id}/suspend", json={}, headers=operator.headers)
    await client.post(f"/v1/admin/users/{customer.user_id}/unsuspend", headers=operator.headers)

    assert again.status_code == 200  # suspending a suspended user changes nothing, and records nothing
    entries = (await session.scalars(
        select(AuditEntry).where(AuditEntry.target_type == "user", AuditEntry.target_id == customer.user_id,
                                 AuditEntry.action.like("admin.user_%")).order_by(AuditEntry.seq)
    )).all()
    assert [(e.action, e.actor_type, str(e.actor_id), e.before, e.after) for e in entries] == [
        ("admin.user_suspended", "user", operator.user_id, {"suspended": False},
         {"suspended": True, "note": "chargeback"}),
        ("admin.user_unsuspended", "user", operator.user_id, {"suspended": True}, {"suspended": False}),
    ]


async def test_an_admin_cannot_suspend_themselves_nor_unsuspend_an_active_user(client, signup, admin) -> None:
    operator = await admin()
    customer = await signup()

    own = await client.post(f"/v1/admin/users/{operator.user_id}/suspend", json={}, headers=operator.headers)
    active = await client.post(f"/v1/admin/users/{customer.user_id}/unsuspend", headers=operator.headers)
    unknown = await client.post(f"/v1/admin/users/{uuid.uuid4()}/suspend", json={}, headers=operator.headers)

    assert own.status_code == 409 and own.json()["error"]["code"] == "cannot_suspend_self", own.text
    assert active.status_code == 409 and active.json()["error"]["code"] == "not_suspended", active.text
    assert unknown.status_code == 404, unknown.text
    assert (await client.get("/v1/me", headers=operator.headers)).status_code == 200


async def test_a_suspended_user_cannot_sign_in_by_any_way_or_refresh_until_unsuspended(
    client, signup, admin, last_email
) -> None:
    operator = await admin()
    customer = await signup()
    credentials = {"email": customer.email, "password": TEST_PASSWORD}
    await client.post("/v1/auth/magic-link", json={"email": customer.email})
    link = token_in(await last_email(customer.email, "magic_link"))
    suspended = await client.post(f"/v1/admin/users/{customer.user_id}/suspend", json={}, headers=operator.headers)
    assert suspended.status_code == 200, suspended.text

    refused = await client.post("/v1/auth/login", json=credentials)
    wrong = await client.post("/v1/auth/login", json={**credentials, "password": "not the right passphrase"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "user_suspended", refused.text
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_credentials"  # no oracle
    by_link = await client.post("/v1/auth/magic-link/consume", json={"token": link})
    assert by_link.status_code == 401 and by_link.json()["error"]["code"] == "user_suspended"
    renewed = await client.post("/v1/auth/refresh", json={"refresh_token": customer.refresh_token})
    assert renewed.status_code == 401 and renewed.json()["error"]["code"] == "user_suspended"

    await client.post(f"/v1/admin/users/{customer.user_id}/unsuspend", headers=operator.headers)
    assert (await client.post("/v1/auth/login", json=credentials)).status_code == 200
    assert (await client.post("/v1/auth/magic-link/consume", json={"token": link})).status_code == 200  # unspent
    assert (await client.post("/v1/auth/refresh", json={"refresh_token": customer.refresh_token})).status_code == 200
