"""Magic links: single-use, stored hashed, 15-minute expiry, delivered through the email outbox."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import time_machine
from sqlalchemy import func, select, text

from jushostit.models import AuthSession, EmailOutbox, MagicLink, User

LINK = re.compile(r"http://testserver/auth/magic-link\?token=(jhm_[A-Za-z0-9_\-]+)")


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return body["error"]


async def magic_emails(session, to: str) -> list[EmailOutbox]:
    rows = await session.scalars(
        select(EmailOutbox).where(EmailOutbox.to_address == to, EmailOutbox.template == "magic_link")
    )
    return list(rows.all())


async def request_link(client: httpx.AsyncClient, session, email: str) -> str:
    """Ask for a link and read the token from the email queued in the outbox."""
    response = await client.post("/v1/auth/magic-link", json={"email": email})
    assert response.status_code == 202, response.text
    emails = await magic_emails(session, email.strip().lower())
    assert emails, "no magic-link email was queued"
    found = LINK.search(emails[-1].body)
    assert found, emails[-1].body
    return found.group(1)


async def consume(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/v1/auth/magic-link/consume", json={"token": token})


async def test_request_for_existing_user_queues_an_email_holding_the_link(client, signup, session) -> None:
    user = await signup()
    before = datetime.now(UTC)
    response = await client.post("/v1/auth/magic-link", json={"email": user.email})
    assert response.status_code == 202
    assert response.content == b""

    emails = await magic_emails(session, user.email)
    assert len(emails) == 1
    email = emails[0]
    assert email.status == "pending"
    assert email.subject == "Your sign-in link"
    assert "expires in 15 minutes" in email.body
    token = LINK.search(email.body).group(1)
    assert len(token) > 40

    link = await session.scalar(select(MagicLink).where(MagicLink.user_id == user.user_id))
    assert link is not None and link.used_at is None
    assert link.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert before + timedelta(minutes=15) - timedelta(seconds=5) <= link.expires_at
    assert link.expires_at <= datetime.now(UTC) + timedelta(minutes=15)


async def test_request_matches_the_email_case_insensitively(client, signup, session) -> None:
    user = await signup()
    token = await request_link(client, session, f"  {user.email.upper()} ")
    assert (await consume(client, token)).status_code == 200


async def test_consuming_returns_tokens_that_work_and_marks_email_verified(client, signup, session) -> None:
    user = await signup(verified=False)
    assert (await client.get("/v1/me", headers=user.headers)).json()["user"]["email_verified"] is False
    token = await request_link(client, session, user.email)

    response = await consume(client, token)
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 900
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200
    assert me.json()["user"]["id"] == user.user_id
    assert me.json()["user"]["email_verified"] is True  # they read the mailbox
    refreshed = await client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200

    link = await session.scalar(select(MagicLink).where(MagicLink.user_id == user.user_id))
    await session.refresh(link)
    assert link.used_at is not None
    methods = (await session.scalars(select(AuthSession.method).where(AuthSession.user_id == user.user_id))).all()
    assert "magic_link" in methods


async def test_a_link_works_only_once(client, signup, session) -> None:
    user = await signup()
    token = await request_link(client, session, user.email)
    assert (await consume(client, token)).status_code == 200
    sessions = await session.scalar(
        select(func.count()).select_from(AuthSession).where(AuthSession.user_id == user.user_id)
    )

    second = await consume(client, token)
    error = assert_error(second, 401, "invalid_token")
    assert "already used" in error["message"]
    assert second.headers["www-authenticate"] == "Bearer"
    # Nothing was signed in by the second attempt.
    assert (
        await session.scalar(select(func.count()).select_from(AuthSession).where(AuthSession.user_id == user.user_id))
        == sessions
    )


async def test_an_expired_link_is_refused(client, signup, session) -> None:
    user = await signup()
    token = await request_link(client, session, user.email)
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=15, seconds=1), tick=False):
        assert_error(await consume(client, token), 401, "invalid_token")
    link = await session.scalar(select(MagicLink).where(MagicLink.user_id == user.user_id))
    await session.refresh(link)
    assert link.used_at is None  # a refused link is not marked used


async def test_a_link_still_works_just_before_it_expires(client, signup, session) -> None:
    user = await signup()
    token = await request_link(client, session, user.email)
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=14, seconds=50), tick=False):
        response = await consume(client, token)
        assert response.status_code == 200, response.text
        me = await client.get("/v1/me", headers={"Authorization": f"Bearer {response.json()['access_token']}"})
        assert me.status_code == 200 and me.json()["user"]["id"] == user.user_id


async def test_each_request_issues_an_independent_link(client, signup, session) -> None:
    user = await signup()
    first = await request_link(client, session, user.email)
    second = await request_link(client, session, user.email)
    assert first != second
    assert (await consume(client, second)).status_code == 200
    assert (await consume(client, first)).status_code == 200
    assert_error(await consume(client, first), 401, "invalid_token")


async def test_unknown_email_answers_the_same_and_queues_nothing(client, signup, session) -> None:
    known = await signup()
    outbox_before = await session.scalar(select(func.count()).select_from(EmailOutbox))
    links_before = await session.scalar(select(func.count()).select_from(MagicLink))

    unknown = await client.post("/v1/auth/magic-link", json={"email": "nobody-here@example.com"})
    assert unknown.status_code == 202
    assert await session.scalar(select(func.count()).select_from(EmailOutbox)) == outbox_before
    assert await session.scalar(select(func.count()).select_from(MagicLink)) == links_before
    assert await magic_emails(session, "nobody-here@example.com") == []
    assert await session.scalar(select(User).where(User.email == "nobody-here@example.com")) is None

    # Indistinguishable from a request for an address that has an account (no enumeration).
    existing = await client.post("/v1/auth/magic-link", json={"email": known.email})
    assert (existing.status_code, existing.content) == (unknown.status_code, unknown.content)


async def test_token_is_stored_only_hashed(client, signup, session) -> None:
    user = await signup()
    token = await request_link(client, session, user.email)
    rows = (await session.execute(text("SELECT row_to_json(m)::text FROM magic_links m"))).scalars().all()
    assert rows
    assert all(token not in row for row in rows)
    assert any(hashlib.sha256(token.encode()).hexdigest() in row for row in rows)
    # The secret part alone is not there either.
    secret = token.removeprefix("jhm_")
    assert all(secret not in row for row in rows)


@pytest.mark.parametrize(
    "token",
    [
        "jhm_" + "A" * 43,  # right shape, never issued
        "not-a-token",
        "jhr_refresh-token-is-not-a-magic-link",
    ],
)
async def test_unknown_tokens_are_401(client, token) -> None:
    assert_error(await consume(client, token), 401, "invalid_token")


async def test_another_token_type_cannot_be_used_as_a_magic_link(client, signup) -> None:
    user = await signup()
    assert_error(await consume(client, user.refresh_token), 401, "invalid_token")
    assert_error(await consume(client, user.access_token), 401, "invalid_token")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/auth/magic-link", {"email": "not-an-email"}),
        ("/v1/auth/magic-link", {"email": 42}),
        ("/v1/auth/magic-link", {}),
        ("/v1/auth/magic-link", {"email": "a@example.com", "redirect": "https://evil.example"}),
        ("/v1/auth/magic-link/consume", {"token": ""}),
        ("/v1/auth/magic-link/consume", {"token": 123}),
        ("/v1/auth/magic-link/consume", {"token": "x" * 513}),
        ("/v1/auth/magic-link/consume", {"token": "jhm_x", "user_id": "00000000-0000-0000-0000-000000000000"}),
    ],
)
async def test_bad_input_is_422_in_contract_shape(client, session, path, body) -> None:
    outbox_before = await session.scalar(select(func.count()).select_from(EmailOutbox))
    response = await client.post(path, json=body)
    error = assert_error(response, 422, "validation_error")
    assert isinstance(error["details"], list) and error["details"]
    assert await session.scalar(select(func.count()).select_from(EmailOutbox)) == outbox_before


async def test_malformed_json_is_422(client) -> None:
    response = await client.post(
        "/v1/auth/magic-link", content=b'{"email": ', headers={"Content-Type": "application/json"}
    )
    assert_error(response, 422, "invalid_json")
