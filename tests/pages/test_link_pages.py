"""Every link we e-mail opens a page in a browser; its one button completes the action (POST, CSRF-safe)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from jushostit.models import Membership, User
from tests.conftest import TEST_PASSWORD, asgi_client, token_in
from tests.test_logs_no_secrets import everything_logged, log_capture  # noqa: F401 - the fixture

NEW_PASSWORD = "a brand new sturdy passphrase"
HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')


def form_of(page: httpx.Response) -> tuple[str, dict[str, str]]:
    """The form's action and hidden fields, as a browser would send them."""
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
    action = re.search(r'<form method="post" action="([^"]+)">', page.text)
    assert action, page.text
    return action.group(1), dict(HIDDEN.findall(page.text))


async def press(client: httpx.AsyncClient, page: httpx.Response, **extra: str) -> httpx.Response:
    """Press the page's button: POST its form, with the cookie the page set (the client keeps it)."""
    action, fields = form_of(page)
    return await client.post(action, data={**fields, **extra})


def link_path(body: str) -> str:
    found = re.search(r"http://testserver(/\S+\?token=\S+)", body)
    assert found, body
    return found.group(1)


async def test_the_confirmation_link_opens_a_page_whose_button_confirms(client, signup, session, last_email) -> None:
    user = await signup(verified=False)
    path = link_path(await last_email(user.email, "verify_email"))
    page = await client.get(path)
    assert page.status_code == 200 and "Confirm my address" in page.text and "<script" not in page.text
    assert (await session.get(User, uuid.UUID(user.user_id))).email_verified is False  # opening changes nothing
    done = await press(client, page)
    assert done.status_code == 200 and "is confirmed" in done.text, done.text
    await session.refresh(await session.get(User, uuid.UUID(user.user_id)))
    assert (await session.get(User, uuid.UUID(user.user_id))).email_verified is True
    again = await press(client, page)
    assert again.status_code == 400 and "invalid, expired or already used" in again.text


async def test_the_sign_in_link_opens_a_page_whose_button_signs_in(client, signup, last_email) -> None:
    user = await signup()
    await client.post("/v1/auth/magic-link", json={"email": user.email})
    page = await client.get(link_path(await last_email(user.email, "magic_link")))
    assert "Sign in" in page.text
    done = await press(client, page)
    assert done.status_code == 200 and "You are signed in" in done.text
    access = re.findall(r"<code>([^<]+)</code>", done.text)[0]
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {access}"})
    assert me.status_code == 200 and me.json()["user"]["id"] == user.user_id


async def test_the_reset_link_opens_a_page_that_sets_the_new_password(client, signup, last_email) -> None:
    user = await signup()
    await client.post("/v1/auth/password-reset", json={"email": user.email})
    page = await client.get(link_path(await last_email(user.email, "password_reset")))
    assert 'type="password"' in page.text
    weak = await press(client, page, password="aaaaaaaaaa")
    assert weak.status_code == 400 and "too easy to guess" in weak.text
    done = await press(client, weak, password=NEW_PASSWORD)  # the page offers the form again
    assert done.status_code == 200 and "Your password is changed" in done.text, done.text
    assert "signed out" in done.text  # what was revoked is said
    assert (await client.post("/v1/auth/login", json={"email": user.email, "password": NEW_PASSWORD})).status_code == 200
    assert (await client.get("/v1/me", headers=user.headers)).status_code == 401


async def test_the_invite_link_lets_a_new_person_join_with_one_button(
    client, signup, session, last_email
) -> None:
    owner = await signup(account_name="Team Page Co")
    guest = f"guest-{uuid.uuid4().hex[:8]}@example.com"
    invited = await client.post(f"/v1/accounts/{owner.account_id}/invites", json={"email": guest, "role": "admin"},
                                headers=owner.headers)
    assert invited.status_code == 201, invited.text
    page = await client.get(link_path(await last_email(guest, "invite")))
    assert "Join Team Page Co" in page.text and "as admin" in page.text
    done = await press(client, page)
    assert done.status_code == 200 and "You joined Team Page Co as admin" in done.text, done.text
    user = await session.scalar(select(User).where(User.email == guest))
    assert user is not None and user.email_verified and user.password_hash is None
    membership = await session.scalar(select(Membership).where(Membership.user_id == user.id))
    assert str(membership.account_id) == owner.account_id and membership.role == "admin"


async def test_an_invite_to_a_never_confirmed_user_waits_for_the_confirmation(client, signup, session, last_email) -> None:
    owner = await signup(account_name="Careful Co")
    squatted = await signup(verified=False)
    await client.post(f"/v1/accounts/{owner.account_id}/invites", json={"email": squatted.email}, headers=owner.headers)
    page = await client.get(link_path(await last_email(squatted.email, "invite")))
    refused = await press(client, page)
    assert refused.status_code == 403 and "Confirm your e-mail address first" in refused.text
    assert await session.scalar(select(Membership).where(Membership.user_id == uuid.UUID(squatted.user_id),
                                                         Membership.account_id == uuid.UUID(owner.account_id))) is None


@pytest.mark.parametrize("attack", ["no cookie", "wrong csrf", "cross-site origin", "json body"])
async def test_a_forged_post_changes_nothing(app, signup, session, last_email, attack) -> None:
    user = await signup(verified=False)
    path = link_path(await last_email(user.email, "verify_email"))
    async with asgi_client(app) as browser:
        page = await browser.get(path)
        action, fields = form_of(page)
        if attack == "no cookie":
            browser.cookies.clear()
            response = await browser.post(action, data=fields)
        elif attack == "wrong csrf":
            response = await browser.post(action, data={**fields, "csrf": "guessed"})
        elif attack == "cross-site origin":
            response = await browser.post(action, data=fields, headers={"Origin": "https://evil.example"})
        else:
            response = await browser.post(action, json=fields)
    assert response.status_code == 403, response.text
    assert (await session.get(User, uuid.UUID(user.user_id))).email_verified is False
    # The untouched link still works afterwards.
    async with asgi_client(app) as browser:
        assert (await press(browser, await browser.get(path))).status_code == 200


async def test_a_dead_link_opens_a_page_that_says_so(client) -> None:
    page = await client.get("/invites/accept", params={"token": "jhi_" + "x" * 40})
    assert page.status_code == 404 and "invalid, expired, revoked or already used" in page.text
    missing = await client.get("/auth/verify-email")
    assert missing.status_code == 422  # no token at all: the API's error contract


async def test_link_tokens_never_reach_the_logs(client, signup, last_email, log_capture: Any) -> None:  # noqa: F811
    capfd, caplog = log_capture
    user = await signup(verified=False)
    await client.post("/v1/auth/magic-link", json={"email": user.email})
    await client.post("/v1/auth/password-reset", json={"email": user.email})
    tokens = []
    for template in ("verify_email", "magic_link", "password_reset"):
        body = await last_email(user.email, template)
        tokens.append(token_in(body))
        page = await client.get(link_path(body))
        await press(client, page, password=NEW_PASSWORD)
    logged = everything_logged(capfd, caplog)
    assert "/auth/verify-email" in logged  # the requests were logged...
    assert not [token for token in tokens if token in logged]  # ...without their tokens
    assert TEST_PASSWORD not in logged and NEW_PASSWORD not in logged


async def test_forgot_password_page_e_mails_a_reset_link_and_answers_the_same_for_unknown_addresses(
    client, signup, session, last_email
) -> None:
    user = await signup()
    page = await client.get("/auth/forgot-password")
    assert page.status_code == 200 and 'type="email"' in page.text
    known = await press(client, page, email=user.email)
    unknown = await press(client, await client.get("/auth/forgot-password"), email="nobody-at-all@example.com")
    assert known.status_code == unknown.status_code == 200 and known.text == unknown.text
    assert "/auth/reset-password?token=jhp_" in await last_email(user.email, "password_reset")


async def test_every_link_in_our_e_mails_opens_a_page(client, signup, session, last_email) -> None:
    """Whatever an e-mail tells a person to open answers 200 with a page (never a JSON 404)."""
    owner = await signup(account_name="Links Co")
    fresh = await signup(verified=False)
    await client.post("/v1/auth/signup", json={"email": owner.email, "password": TEST_PASSWORD, "account_name": "X"})
    await client.post("/v1/auth/magic-link", json={"email": owner.email})
    await client.post("/v1/auth/password-reset", json={"email": owner.email})
    await client.post(f"/v1/accounts/{owner.account_id}/invites", json={"email": "links-guest@example.com"},
                      headers=owner.headers)
    bodies = [await last_email(owner.email, template) for template in ("signup_existing", "magic_link", "password_reset")]
    bodies += [await last_email(fresh.email, "verify_email"), await last_email("links-guest@example.com", "invite")]
    reset = await client.post("/v1/auth/password-reset/confirm",
                              json={"token": token_in(bodies[2]), "password": NEW_PASSWORD})
    assert reset.status_code == 200
    bodies.append(await last_email(owner.email, "access_revoked"))
    links = {link for body in bodies for link in re.findall(r"http://testserver\S*", body)}
    assert len(links) == 5, links  # forgot-password, verify, magic link, reset, invite
    for link in links:
        page = await client.get(link.removeprefix("http://testserver"))
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), (link, page.text)


async def test_the_page_stripe_checkout_returns_to_says_what_happens_next_and_reveals_nothing(client) -> None:
    subscription = "0193a1b2-0000-7000-8000-000000000001"
    paid = await client.get("/billing/checkout", params={"subscription": subscription, "result": "paid"})
    assert paid.status_code == 200 and "being confirmed by Stripe" in paid.text
    cancelled = await client.get("/billing/checkout", params={"subscription": subscription, "result": "cancelled"})
    assert cancelled.status_code == 200 and "Nothing was charged" in cancelled.text
    bad = await client.get("/billing/checkout", params={"subscription": subscription, "result": "maybe"})
    assert bad.status_code == 422
