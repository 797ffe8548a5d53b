"""E-mail verification, password reset, what a magic link may change, and the per-address e-mail limit."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import time_machine
from sqlalchemy import func, select

from jushostit.kit.crypto import new_token, token_hash
from jushostit.models import ApiKey, EmailOutbox, Invite, Subscription, User
from tests.auth.test_api_keys import assert_error, bearer
from tests.auth.test_throttling import unique_ip
from tests.conftest import TEST_PASSWORD, asgi_client, token_in

NEW_PASSWORD = "a brand new sturdy passphrase"


async def count(session, model: Any, *where: Any) -> int:
    return await session.scalar(select(func.count()).select_from(model).where(*where))


async def emails_to(session, address: str, template: str) -> int:
    return await count(session, EmailOutbox, EmailOutbox.to_address == address, EmailOutbox.template == template)


# --- verification --------------------------------------------------------------------------------------------


async def test_an_unverified_user_can_sign_in_but_not_check_out_create_keys_or_invite(client, signup, session) -> None:
    user = await signup(verified=False)
    assert (await client.get("/v1/me", headers=user.headers)).json()["user"]["email_verified"] is False
    before = [await count(session, model) for model in (Subscription, ApiKey, Invite)]

    error = assert_error(await client.post(f"/v1/accounts/{user.account_id}/checkout", json={"plan": "free"},
                                           headers=user.headers), 403, "email_unverified")
    assert "/v1/auth/verify-email/resend" in error["message"]
    assert_error(await client.post("/v1/me/api-keys", json={"name": "k", "scopes": ["account:read"]},
                                   headers=user.headers), 403, "email_unverified")
    assert_error(await client.post(f"/v1/accounts/{user.account_id}/invites",
                                   json={"email": "friend@example.com", "role": "member"}, headers=user.headers),
                 403, "email_unverified")
    assert [await count(session, model) for model in (Subscription, ApiKey, Invite)] == before


async def test_the_confirmation_link_verifies_once_and_unlocks_everything(client, signup, session, last_email) -> None:
    user = await signup(verified=False)
    token = token_in(await last_email(user.email, "verify_email"))
    confirmed = await client.post("/v1/auth/verify-email", json={"token": token})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["email_verified"] is True and confirmed.json()["id"] == user.user_id
    assert_error(await client.post("/v1/auth/verify-email", json={"token": token}), 401, "invalid_token")
    # Verifying changed nothing else: the session, the password still work.
    assert (await client.get("/v1/me", headers=user.headers)).json()["user"]["email_verified"] is True
    assert (await client.post("/v1/auth/login", json={"email": user.email, "password": TEST_PASSWORD})).status_code == 200
    checkout = await client.post(f"/v1/accounts/{user.account_id}/checkout", json={"plan": "free"}, headers=user.headers)
    assert checkout.status_code == 201, checkout.text
    key = await client.post("/v1/me/api-keys", json={"name": "k", "scopes": ["account:read"]}, headers=user.headers)
    assert key.status_code == 201, key.text


async def test_resend_sends_a_new_link_and_a_verified_user_is_told_there_is_nothing_to_do(
    client, signup, session, last_email
) -> None:
    user = await signup(verified=False)
    first = token_in(await last_email(user.email, "verify_email"))
    resent = await client.post("/v1/auth/verify-email/resend", headers=user.headers)
    assert resent.status_code == 202, resent.text
    second = token_in(await last_email(user.email, "verify_email"))
    assert second != first and await emails_to(session, user.email, "verify_email") == 2
    assert (await client.post("/v1/auth/verify-email", json={"token": second})).status_code == 200
    assert_error(await client.post("/v1/auth/verify-email/resend", headers=user.headers), 409, "already_verified")
    assert_error(await client.post("/v1/auth/verify-email/resend"), 401, "unauthorized")


async def test_a_confirmation_link_expires_and_other_tokens_do_not_verify(client, signup, session, last_email) -> None:
    user = await signup(verified=False)
    token = token_in(await last_email(user.email, "verify_email"))
    assert_error(await client.post("/v1/auth/verify-email", json={"token": user.refresh_token}), 401, "invalid_token")
    assert (await client.post("/v1/auth/password-reset", json={"email": user.email})).status_code == 202
    reset = token_in(await last_email(user.email, "password_reset"))
    assert_error(await client.post("/v1/auth/verify-email", json={"token": reset}), 401, "invalid_token")
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=48, seconds=1), tick=False):
        assert_error(await client.post("/v1/auth/verify-email", json={"token": token}), 401, "invalid_token")
    assert (await session.get(User, uuid.UUID(user.user_id))).email_verified is False


# --- password reset ------------------------------------------------------------------------------------------


async def test_a_password_reset_signs_out_every_session_keeps_keys_and_says_what_it_revoked(
    app, client, signup, session, last_email
) -> None:
    user = await signup()
    key = (await client.post("/v1/me/api-keys", json={"name": "ci", "scopes": ["account:read"]},
                             headers=user.headers)).json()["key"]
    other_device = (await client.post("/v1/auth/login", json={"email": user.email, "password": TEST_PASSWORD})).json()
    unknown = await client.post("/v1/auth/password-reset", json={"email": "no-such-user@example.com"})
    asked = await client.post("/v1/auth/password-reset", json={"email": user.email.upper()})
    assert (asked.status_code, asked.content) == (unknown.status_code, unknown.content) == (202, b"")
    assert await emails_to(session, "no-such-user@example.com", "password_reset") == 0
    mail = await last_email(user.email, "password_reset")
    assert "expires in 30 minutes" in mail and "/auth/reset-password?token=jhp_" in mail

    reset = await client.post("/v1/auth/password-reset/confirm", json={"token": token_in(mail), "password": NEW_PASSWORD})
    assert reset.status_code == 200, reset.text
    assert reset.json()["revoked"] == {"password": True, "sessions": 2, "api_keys": 0}
    for old in (user.access_token, other_device["access_token"]):
        assert (await client.get("/v1/me", headers=bearer(old))).status_code == 401
    assert (await client.get("/v1/me", headers=bearer(reset.json()["access_token"]))).status_code == 200
    assert (await client.get("/v1/me", headers=bearer(key))).status_code == 200  # a verified user's keys stay
    assert (await client.post("/v1/auth/login", json={"email": user.email, "password": TEST_PASSWORD})).status_code == 401
    assert (await client.post("/v1/auth/login", json={"email": user.email, "password": NEW_PASSWORD})).status_code == 200
    notice = await last_email(user.email, "access_revoked")
    assert "password was reset" in notice and "2 signed-in session(s) were signed out" in notice
    # Single use.
    again = await client.post("/v1/auth/password-reset/confirm", json={"token": token_in(mail), "password": TEST_PASSWORD})
    assert_error(again, 401, "invalid_token")


async def test_a_reset_link_expires_after_30_minutes_and_a_refused_password_leaves_it_usable(
    client, signup, session, last_email
) -> None:
    user = await signup()
    await client.post("/v1/auth/password-reset", json={"email": user.email})
    token = token_in(await last_email(user.email, "password_reset"))
    weak = await client.post("/v1/auth/password-reset/confirm", json={"token": token, "password": "aaaaaaaaaa"})
    assert_error(weak, 400, "weak_password")
    assert (await client.get("/v1/me", headers=user.headers)).status_code == 200  # nothing was revoked
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=30, seconds=1), tick=False):
        late = await client.post("/v1/auth/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD})
        assert_error(late, 401, "invalid_token")
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=29), tick=False):
        ok = await client.post("/v1/auth/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD})
        assert ok.status_code == 200, ok.text


async def test_a_completed_reset_voids_the_other_reset_links(client, signup, last_email) -> None:
    user = await signup()
    await client.post("/v1/auth/password-reset", json={"email": user.email})
    first = token_in(await last_email(user.email, "password_reset"))
    await client.post("/v1/auth/password-reset", json={"email": user.email})
    second = token_in(await last_email(user.email, "password_reset"))
    assert (await client.post("/v1/auth/password-reset/confirm",
                              json={"token": second, "password": NEW_PASSWORD})).status_code == 200
    stale = await client.post("/v1/auth/password-reset/confirm", json={"token": first, "password": TEST_PASSWORD})
    assert_error(stale, 401, "invalid_token")


# --- what a magic link may change -----------------------------------------------------------------------------


async def magic_link(client: httpx.AsyncClient, last_email: Any, email: str) -> httpx.Response:
    assert (await client.post("/v1/auth/magic-link", json={"email": email})).status_code == 202
    return await client.post("/v1/auth/magic-link/consume", json={"token": token_in(await last_email(email, "magic_link"))})


async def test_a_magic_link_on_a_verified_user_signs_in_and_changes_nothing_else(
    client, signup, session, last_email
) -> None:
    user = await signup()
    keys = [(await client.post("/v1/me/api-keys", json={"name": f"k{i}", "scopes": ["account:read"]},
                               headers=user.headers)).json()["key"] for i in range(3)]
    signed_in = await magic_link(client, last_email, user.email)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["revoked"] is None
    assert (await client.get("/v1/me", headers=user.headers)).status_code == 200
    for key in keys:
        assert (await client.get("/v1/me", headers=bearer(key))).status_code == 200
    assert (await client.post("/v1/auth/login", json={"email": user.email, "password": TEST_PASSWORD})).status_code == 200
    assert await emails_to(session, user.email, "access_revoked") == 0


async def test_the_first_mailbox_proof_of_a_never_verified_address_evicts_the_squatter_and_says_so(
    client, signup, session, last_email
) -> None:
    """Someone signed up with an address they do not own and never confirmed it; the owner signs in by magic
    link: the squatter's password, sessions and API keys (from before keys needed a verified address) go, and
    the owner is told what went."""
    squatter = await signup(f"owner-{uuid.uuid4().hex[:8]}@example.com", verified=False)
    legacy_key = new_token("jhi_")
    session.add(ApiKey(user_id=uuid.UUID(squatter.user_id), name="old", display_prefix=legacy_key[:12],
                       token_hash=token_hash(legacy_key), scopes=["account:read"]))
    await session.flush()
    owner = await magic_link(client, last_email, squatter.email)
    assert owner.status_code == 200, owner.text
    assert owner.json()["revoked"] == {"password": True, "sessions": 1, "api_keys": 1}
    assert (await client.get("/v1/me", headers=bearer(owner.json()["access_token"]))).json()["user"]["email_verified"]
    assert (await client.get("/v1/me", headers=squatter.headers)).status_code == 401
    assert (await client.get("/v1/me", headers=bearer(legacy_key))).status_code == 401
    login = await client.post("/v1/auth/login", json={"email": squatter.email, "password": TEST_PASSWORD})
    assert login.status_code == 401
    notice = await last_email(squatter.email, "access_revoked")
    assert "the old password no longer works" in notice and "1 API key(s) were revoked" in notice


# --- the per-address e-mail limit ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/auth/magic-link", "/v1/auth/password-reset"])
async def test_link_emails_to_one_address_are_limited_whatever_the_client_ip(
    app_factory, signup, session, path
) -> None:
    user = await signup()
    app = app_factory(emails_per_address_per_hour=3)
    limited = ("verify_email", "signup_existing", "magic_link", "password_reset")
    before = await count(session, EmailOutbox, EmailOutbox.to_address == user.email, EmailOutbox.template.in_(limited))
    answers = set()
    for _ in range(6):
        async with asgi_client(app, ip=unique_ip()) as c:
            response = await c.post(path, json={"email": user.email})
            answers.add((response.status_code, response.content))
    assert answers == {(202, b"")}  # the same answer throughout: the limit tells nothing
    after = await count(session, EmailOutbox, EmailOutbox.to_address == user.email, EmailOutbox.template.in_(limited))
    assert after == max(before, 3)
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=1, seconds=1), tick=False):
        async with asgi_client(app, ip=unique_ip()) as c:
            assert (await c.post(path, json={"email": user.email})).status_code == 202
    assert await count(session, EmailOutbox, EmailOutbox.to_address == user.email,
                       EmailOutbox.template.in_(limited)) == after + 1


# --- one identity, one normalisation ---------------------------------------------------------------------------


async def test_an_address_signs_in_however_it_is_written(client) -> None:
    decomposed = unicodedata.normalize("NFD", f"Zoë.{uuid.uuid4().hex[:6]}@Bücher.Example")
    response = await client.post("/v1/auth/signup",
                                 json={"email": decomposed, "password": TEST_PASSWORD, "account_name": "Zoë"})
    assert response.status_code == 202, response.text
    local = unicodedata.normalize("NFC", decomposed.split("@")[0])
    for written in (f"{local}@bücher.example", f"{local.upper()}@BÜCHER.EXAMPLE", f"{local}@xn--bcher-kva.example",
                    decomposed):
        signed_in = await client.post("/v1/auth/login", json={"email": written, "password": TEST_PASSWORD})
        assert signed_in.status_code == 200, (written, signed_in.text)


@pytest.mark.parametrize("name", [
    "gnp\u202eexe.png", "a\u2066b\u2069", "zero\u200bwidth", "bom\ufeff", "line\u2028break", "para\u2029graph",
    "n\u0085el", "rlm\u200f", "alm\u061c",
])
async def test_display_names_refuse_bidi_zero_width_and_separator_characters(client, signup, name) -> None:
    refused = await client.post("/v1/auth/signup", json={
        "email": f"n-{uuid.uuid4().hex[:8]}@example.com", "password": TEST_PASSWORD, "account_name": name})
    assert_error(refused, 422, "validation_error")
    user = await signup()
    renamed = await client.patch(f"/v1/accounts/{user.account_id}", json={"name": name}, headers=user.headers)
    assert_error(renamed, 422, "validation_error")
    key = await client.post("/v1/me/api-keys", json={"name": name, "scopes": ["account:read"]}, headers=user.headers)
    assert_error(key, 422, "validation_error")
