from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
import time_machine
from sqlalchemy import func, select

from jushostit.models import Account, AuditEntry, EmailOutbox, Membership, User
from tests.conftest import TEST_PASSWORD


async def test_signup_creates_an_unverified_user_and_their_account_and_emails_a_confirmation(
    client: httpx.AsyncClient, session
) -> None:
    response = await client.post(
        "/v1/auth/signup",
        json={"email": "  Mixed.Case@Example.COM ", "password": TEST_PASSWORD, "account_name": "Mixed Co"},
    )
    assert response.status_code == 202, response.text
    assert set(response.json()) == {"message"} and "access_token" not in response.text
    user = await session.scalar(select(User).where(User.email == "mixed.case@example.com"))
    assert user is not None and user.password_hash.startswith("$argon2id$") and user.email_verified is False
    membership = await session.scalar(select(Membership).where(Membership.user_id == user.id))
    account = await session.get(Account, membership.account_id)
    assert membership.role == "owner" and account.name == "Mixed Co" and account.status == "pending"
    actions = (await session.scalars(select(AuditEntry.action).where(AuditEntry.actor_id == user.id))).all()
    assert {"user.signup", "account.created"} <= set(actions)
    mail = await session.scalar(select(EmailOutbox).where(EmailOutbox.to_address == "mixed.case@example.com"))
    assert mail is not None and mail.template == "verify_email"
    assert "http://testserver/auth/verify-email?token=jhv_" in mail.body and '"Mixed Co"' in mail.body
    # The address signs in at once, typed any way sign-up accepted it.
    signed_in = await client.post("/v1/auth/login", json={"email": "MIXED.case@example.com", "password": TEST_PASSWORD})
    assert signed_in.status_code == 200, signed_in.text


async def test_signup_with_a_taken_address_answers_the_same_creates_nothing_and_tells_the_owner(
    client, session, signup
) -> None:
    first = await signup("dup@example.com")
    users_before = await session.scalar(select(func.count()).select_from(User))
    accounts_before = await session.scalar(select(func.count()).select_from(Account))
    fresh = await client.post(
        "/v1/auth/signup", json={"email": "fresh-one@example.com", "password": TEST_PASSWORD, "account_name": "New"}
    )
    again = await client.post(
        "/v1/auth/signup", json={"email": "DUP@example.com", "password": "another sturdy passphrase", "account_name": "Again"}
    )
    assert (again.status_code, again.json()) == (fresh.status_code, fresh.json()) == (202, fresh.json())
    assert await session.scalar(select(func.count()).select_from(User)) == users_before + 1  # only fresh-one
    assert await session.scalar(select(func.count()).select_from(Account)) == accounts_before + 1
    told = await session.scalar(
        select(EmailOutbox).where(EmailOutbox.to_address == "dup@example.com", EmailOutbox.template == "signup_existing")
    )
    assert told is not None and "already has a user" in told.body
    # The owner's password is untouched; the second password opens nothing.
    assert (await client.post("/v1/auth/login", json={"email": first.email, "password": TEST_PASSWORD})).status_code == 200
    refused = await client.post("/v1/auth/login", json={"email": first.email, "password": "another sturdy passphrase"})
    assert refused.status_code == 401


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "at least"), ("password123", "too common"), ("qwertyuiop", "too common"), ("x" * 257, None),
        ("aaaaaaaaaa", "too easy to guess"), (" " * 10, "too easy to guess"), ("abcdefghij", "too easy to guess"),
    ],
)
async def test_weak_passwords_are_refused(client, password, message) -> None:
    response = await client.post(
        "/v1/auth/signup", json={"email": "weak@example.com", "password": password, "account_name": "Weak"}
    )
    assert response.status_code in (400, 422)
    error = response.json()["error"]
    if message:
        assert error["code"] == "weak_password" and message in error["message"]


async def test_login_returns_tokens_and_me_lists_memberships(client, signup) -> None:
    user = await signup("login@example.com", account_name="Login Co")
    response = await client.post("/v1/auth/login", json={"email": "LOGIN@example.com", "password": TEST_PASSWORD})
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 900
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200
    assert me.json()["user"]["email"] == "login@example.com"
    assert me.json()["memberships"] == [{"account_id": user.account_id, "account_name": "Login Co", "role": "owner"}]


async def test_wrong_password_and_unknown_email_look_the_same(client, signup) -> None:
    await signup("known@example.com")
    wrong = await client.post("/v1/auth/login", json={"email": "known@example.com", "password": "wrong password!"})
    unknown = await client.post("/v1/auth/login", json={"email": "nobody@example.com", "password": "wrong password!"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"] == unknown.json()["error"]


async def test_refresh_rotates_and_reuse_revokes_the_family(client, signup) -> None:
    user = await signup()
    first = await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != user.refresh_token
    # The spent token is presented again: someone else has it. The whole session dies.
    reuse = await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert reuse.status_code == 401 and reuse.json()["error"]["code"] == "refresh_token_reused"
    after = await client.post("/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert after.status_code == 401
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {rotated['access_token']}"})
    assert me.status_code == 401


async def test_logout_revokes_access_and_refresh(client, signup) -> None:
    user = await signup()
    assert (await client.post("/v1/auth/logout", headers=user.headers)).status_code == 204
    assert (await client.get("/v1/me", headers=user.headers)).status_code == 401
    assert (await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})).status_code == 401


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-jwt", "Bearer jhi_notarealkey0000000", "Basic dXNlcjpwYXNz", "Bearer ", "bearer eyJhbGciOiJub25lIn0.e30."],
)
async def test_bad_tokens_are_401_in_contract_shape(client, header) -> None:
    response = await client.get("/v1/me", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_expired_access_token_is_refused(client, signup) -> None:
    user = await signup()
    later = datetime.now(UTC) + timedelta(minutes=16)
    with time_machine.travel(later, tick=False):
        assert (await client.get("/v1/me", headers=user.headers)).status_code == 401


@pytest.mark.parametrize("length", [72, 73, 256])
async def test_a_long_passphrase_is_accepted_up_to_the_limit(client, length) -> None:
    """The strength estimator scores 72 characters at most; longer passphrases are judged by their start."""
    passphrase = ("correct horse battery staple " * 10)[:length]
    response = await client.post("/v1/auth/signup", json={
        "email": f"long-{length}@example.com", "password": passphrase, "account_name": "Long"})
    assert response.status_code == 202, response.text

