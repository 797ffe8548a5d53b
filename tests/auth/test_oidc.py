"""OIDC sign-in driven end to end against oidc-provider-mock running in-process (REFERENCE §9).

The browser's part is played by two clients: the ASGI client (holding our signed `jushostit_oidc` session
cookie, as a browser would) and a real HTTP client posting the provider's authorization form. authlib then
fetches discovery, the token and the JWKS from the mock over real HTTP and checks state, nonce, issuer,
audience and signature. The mock does not check PKCE, so nothing here claims to test it.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from oidc_provider_mock import User, run_server_in_thread
from pydantic import SecretStr
from sqlalchemy import func, select

from jushostit.config import OIDCProvider
from jushostit.models import Account, AuditEntry, AuthSession, Membership, OIDCIdentity
from jushostit.models import User as DbUser
from tests.conftest import TEST_PASSWORD, asgi_client

CLIENT_ID = "jushostit-test-client"
CLIENT_SECRET = "jushostit-test-client-secret"
PRESET_SUB = "preset-subject"


@pytest.fixture(scope="module")
def provider_url() -> Iterator[str]:
    """The mock provider on loopback; one base URL everywhere, since its issuer follows the Host header."""
    preset = User(sub=PRESET_SUB, claims={"email": "preset@example.com", "email_verified": True})
    with run_server_in_thread(port=0, require_nonce=True, user_claims=[preset]) as server:
        yield f"http://127.0.0.1:{server.server_port}"


@pytest.fixture(scope="module")
def other_provider_url() -> Iterator[str]:
    """A second, independent provider: a different issuer."""
    with run_server_in_thread(port=0, require_nonce=True) as server:
        yield f"http://127.0.0.1:{server.server_port}"


def provider_config(base_url: str) -> OIDCProvider:
    return OIDCProvider(
        discovery_url=f"{base_url}/.well-known/openid-configuration",
        client_id=CLIENT_ID,
        client_secret=SecretStr(CLIENT_SECRET),
    )


@pytest.fixture
def oidc_app(app_factory: Any, provider_url: str, other_provider_url: str) -> Any:
    return app_factory(
        oidc_providers={"mock": provider_config(provider_url), "other": provider_config(other_provider_url)}
    )


@pytest.fixture
async def browser(oidc_app: Any) -> Any:
    async with asgi_client(oidc_app, ip="198.51.100.60") as c:
        yield c


@pytest.fixture
async def provider(provider_url: str) -> Any:
    async with httpx.AsyncClient(base_url=provider_url, timeout=10) as c:
        yield c


async def set_provider_user(provider: httpx.AsyncClient, sub: str, claims: dict[str, Any]) -> None:
    """The mock's own API for (re)defining a user's claims."""
    response = await provider.put(f"/users/{sub}", json=claims)
    assert response.status_code == 204, response.text


async def start_login(browser: httpx.AsyncClient, provider_url: str, name: str = "mock") -> str:
    """GET our login route; return the provider authorize URL it redirects to."""
    response = await browser.get(f"/v1/auth/oidc/{name}/login")
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(f"{provider_url}/oauth2/authorize?")
    assert "jushostit_oidc" in response.headers.get("set-cookie", "")
    return location


async def approve(provider: httpx.AsyncClient, authorize_url: str, sub: str, name: str = "mock") -> str:
    """Submit the provider's authorization form as `sub`; return the callback URL it redirects to."""
    response = await provider.post(authorize_url, data={"sub": sub})
    assert response.status_code == 302, response.text
    callback = response.headers["location"]
    assert callback.startswith(f"http://testserver/v1/auth/oidc/{name}/callback?")
    return callback


async def oidc_sign_in(
    browser: httpx.AsyncClient, provider: httpx.AsyncClient, provider_url: str, sub: str, name: str = "mock"
) -> httpx.Response:
    authorize_url = await start_login(browser, provider_url, name)
    callback = await approve(provider, authorize_url, sub, name)
    return await browser.get(callback)


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    params.update(changes)
    return urlunsplit(parts._replace(query=urlencode(params)))


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def new_sub() -> str:
    return f"sub-{uuid.uuid4().hex}"


async def me(browser: httpx.AsyncClient, access_token: str) -> dict[str, Any]:
    response = await browser.get("/v1/me", headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 200, response.text
    return response.json()


# --- the redirect ----------------------------------------------------------------------------------------


async def test_login_redirects_to_the_provider_with_state_nonce_and_our_callback(browser, provider_url) -> None:
    location = await start_login(browser, provider_url)
    params = query(location)
    assert params["client_id"] == [CLIENT_ID]
    assert params["response_type"] == ["code"]
    assert params["redirect_uri"] == ["http://testserver/v1/auth/oidc/mock/callback"]
    assert set(params["scope"][0].split()) == {"openid", "email", "profile"}
    assert len(params["state"][0]) >= 16
    assert len(params["nonce"][0]) >= 16
    # A second login attempt gets fresh values.
    again = query(await start_login(browser, provider_url))
    assert again["state"] != params["state"] and again["nonce"] != params["nonce"]


# --- first login, repeat login, linking ----------------------------------------------------------------------


async def test_first_login_with_verified_email_creates_user_account_and_identity(
    browser, provider, provider_url, session
) -> None:
    sub = new_sub()
    email = f"{sub}@Example.COM"
    await set_provider_user(provider, sub, {"email": email, "email_verified": True})
    response = await oidc_sign_in(browser, provider, provider_url, sub)
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "bearer" and tokens["access_token"] and tokens["refresh_token"]

    profile = await me(browser, tokens["access_token"])
    assert profile["user"]["email"] == email.lower()
    assert profile["user"]["email_verified"] is True
    assert len(profile["memberships"]) == 1 and profile["memberships"][0]["role"] == "owner"

    user = await session.scalar(select(DbUser).where(DbUser.email == email.lower()))
    assert user is not None and str(user.id) == profile["user"]["id"]
    assert user.password_hash is None  # no password was ever set
    identity = await session.scalar(select(OIDCIdentity).where(OIDCIdentity.subject == sub))
    assert identity is not None
    assert identity.user_id == user.id
    assert identity.issuer == provider_url  # linked by the issuer the id_token carried, plus the subject
    assert identity.provider == "mock"
    membership = await session.scalar(select(Membership).where(Membership.user_id == user.id))
    assert membership.role == "owner" and str(membership.account_id) == profile["memberships"][0]["account_id"]
    actions = set((await session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == str(user.id)))).all())
    assert "user.signup_oidc" in actions
    auth_session = await session.scalar(select(AuthSession).where(AuthSession.user_id == user.id))
    assert auth_session.method == "oidc:mock"

    # The refresh token from an OIDC sign-in rotates like any other.
    rotated = await browser.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert rotated.status_code == 200, rotated.text


async def test_second_login_same_subject_signs_into_same_user_even_if_email_changed(
    browser, provider, provider_url, session
) -> None:
    sub = new_sub()
    first_email = f"first-{uuid.uuid4().hex[:8]}@example.com"
    await set_provider_user(provider, sub, {"email": first_email, "email_verified": True})
    first = await oidc_sign_in(browser, provider, provider_url, sub)
    assert first.status_code == 200, first.text
    first_user = (await me(browser, first.json()["access_token"]))["user"]

    users_before = await session.scalar(select(func.count()).select_from(DbUser))
    accounts_before = await session.scalar(select(func.count()).select_from(Account))
    changed_email = f"changed-{uuid.uuid4().hex[:8]}@example.com"
    await set_provider_user(provider, sub, {"email": changed_email, "email_verified": True})
    second = await oidc_sign_in(browser, provider, provider_url, sub)
    assert second.status_code == 200, second.text
    assert second.json()["access_token"] != first.json()["access_token"]
    second_user = (await me(browser, second.json()["access_token"]))["user"]

    assert second_user["id"] == first_user["id"]
    assert second_user["email"] == first_email  # the link is the subject, not the email
    assert await session.scalar(select(func.count()).select_from(DbUser)) == users_before
    assert await session.scalar(select(func.count()).select_from(Account)) == accounts_before
    assert await session.scalar(select(DbUser).where(DbUser.email == changed_email)) is None
    identities = (await session.scalars(select(OIDCIdentity).where(OIDCIdentity.subject == sub))).all()
    assert len(identities) == 1
    sessions = await session.scalar(
        select(func.count()).select_from(AuthSession).where(AuthSession.user_id == uuid.UUID(first_user["id"]))
    )
    assert sessions == 2


async def test_same_subject_no_longer_needs_a_verified_email_once_linked(
    browser, provider, provider_url
) -> None:
    sub = new_sub()
    await set_provider_user(provider, sub, {"email": f"{sub}@example.com", "email_verified": True})
    first = await oidc_sign_in(browser, provider, provider_url, sub)
    assert first.status_code == 200, first.text
    await set_provider_user(provider, sub, {"email": f"{sub}@example.com", "email_verified": False})
    second = await oidc_sign_in(browser, provider, provider_url, sub)
    assert second.status_code == 200, second.text
    assert (await me(browser, second.json()["access_token"]))["user"]["email"] == f"{sub}@example.com"


async def test_existing_password_user_with_that_verified_email_is_linked_not_duplicated(
    browser, provider, provider_url, signup, session
) -> None:
    existing = await signup(f"linkme-{uuid.uuid4().hex[:8]}@example.com", account_name="Password Co", verified=False)
    sub = new_sub()
    await set_provider_user(provider, sub, {"email": existing.email.upper(), "email_verified": True})
    response = await oidc_sign_in(browser, provider, provider_url, sub)
    assert response.status_code == 200, response.text

    profile = await me(browser, response.json()["access_token"])
    assert profile["user"]["id"] == existing.user_id
    # Still just the account made at sign-up: linking creates no second account.
    assert profile["memberships"] == [{"account_id": existing.account_id, "account_name": "Password Co", "role": "owner"}]
    assert await session.scalar(select(func.count()).select_from(DbUser).where(DbUser.email == existing.email)) == 1
    identity = await session.scalar(select(OIDCIdentity).where(OIDCIdentity.subject == sub))
    assert identity is not None and str(identity.user_id) == existing.user_id
    actions = (await session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == existing.user_id))).all()
    assert "user.oidc_linked" in actions and "user.signup_oidc" not in actions
    # The password was set by whoever signed up with the address, never proven to own the mailbox: the
    # provider's verified email proves it now, so that password and its sessions stop working (no squatting).
    assert "user.mailbox_proven" in actions
    login = await browser.post("/v1/auth/login", json={"email": existing.email, "password": TEST_PASSWORD})
    assert login.status_code == 401
    assert (await browser.get("/v1/me", headers=existing.headers)).status_code == 401
    assert response.json()["revoked"] == {"password": True, "sessions": 1, "api_keys": 0}


async def test_a_verified_password_user_keeps_the_password_when_linked(
    browser, provider, provider_url, signup, session
) -> None:
    existing = await signup(f"verified-{uuid.uuid4().hex[:8]}@example.com", account_name="Verified Co")
    sub = new_sub()
    await set_provider_user(provider, sub, {"email": existing.email, "email_verified": True})
    assert (await oidc_sign_in(browser, provider, provider_url, sub)).status_code == 200
    login = await browser.post("/v1/auth/login", json={"email": existing.email, "password": TEST_PASSWORD})
    assert login.status_code == 200


async def test_identity_is_keyed_by_issuer_and_subject_not_subject_alone(
    browser, provider, provider_url, other_provider_url, session
) -> None:
    """The same `sub` at two issuers is two identities: the second never signs into the first's user."""
    sub = new_sub()
    await set_provider_user(provider, sub, {"email": f"a-{sub}@example.com", "email_verified": True})
    first = await oidc_sign_in(browser, provider, provider_url, sub)
    assert first.status_code == 200, first.text
    async with httpx.AsyncClient(base_url=other_provider_url, timeout=10) as other:
        await set_provider_user(other, sub, {"email": f"b-{sub}@example.com", "email_verified": True})
        second = await oidc_sign_in(browser, other, other_provider_url, sub, name="other")
    assert second.status_code == 200, second.text
    first_user = (await me(browser, first.json()["access_token"]))["user"]
    second_user = (await me(browser, second.json()["access_token"]))["user"]
    assert first_user["id"] != second_user["id"]
    assert second_user["email"] == f"b-{sub}@example.com"
    identities = (await session.scalars(select(OIDCIdentity).where(OIDCIdentity.subject == sub))).all()
    assert {(i.issuer, i.provider, str(i.user_id)) for i in identities} == {
        (provider_url, "mock", first_user["id"]),
        (other_provider_url, "other", second_user["id"]),
    }


async def test_one_user_can_link_identities_from_two_issuers(
    browser, provider, provider_url, other_provider_url, session
) -> None:
    sub = new_sub()
    email = f"{sub}@example.com"
    await set_provider_user(provider, sub, {"email": email, "email_verified": True})
    first = await oidc_sign_in(browser, provider, provider_url, sub)
    assert first.status_code == 200, first.text
    other_sub = new_sub()
    async with httpx.AsyncClient(base_url=other_provider_url, timeout=10) as other:
        await set_provider_user(other, other_sub, {"email": email, "email_verified": True})
        second = await oidc_sign_in(browser, other, other_provider_url, other_sub, name="other")
    assert second.status_code == 200, second.text
    user_id = (await me(browser, first.json()["access_token"]))["user"]["id"]
    assert (await me(browser, second.json()["access_token"]))["user"]["id"] == user_id
    linked = (await session.scalars(select(OIDCIdentity).where(OIDCIdentity.user_id == uuid.UUID(user_id)))).all()
    assert {(i.issuer, i.subject) for i in linked} == {(provider_url, sub), (other_provider_url, other_sub)}


@pytest.mark.parametrize(
    "claims",
    [
        {"email_verified": False},
        {},  # email_verified absent
        {"email_verified": "true"},  # a string is not a verified flag
    ],
    ids=["unverified", "no-verified-claim", "string-true"],
)
async def test_unverified_email_without_link_is_409_and_creates_nothing(
    browser, provider, provider_url, session, claims
) -> None:
    sub = new_sub()
    email = f"{sub}@example.com"
    await set_provider_user(provider, sub, {"email": email, **claims})
    users_before = await session.scalar(select(func.count()).select_from(DbUser))
    response = await oidc_sign_in(browser, provider, provider_url, sub)
    assert_error(response, 409, "oidc_email_unverified")
    assert await session.scalar(select(func.count()).select_from(DbUser)) == users_before
    assert await session.scalar(select(DbUser).where(DbUser.email == email)) is None
    assert await session.scalar(select(OIDCIdentity).where(OIDCIdentity.subject == sub)) is None


async def test_unverified_email_does_not_take_over_an_existing_password_user(
    browser, provider, provider_url, signup, session
) -> None:
    victim = await signup(f"victim-{uuid.uuid4().hex[:8]}@example.com")
    sub = new_sub()
    await set_provider_user(provider, sub, {"email": victim.email, "email_verified": False})
    response = await oidc_sign_in(browser, provider, provider_url, sub)
    assert_error(response, 409, "oidc_email_unverified")
    assert await session.scalar(select(OIDCIdentity).where(OIDCIdentity.user_id == uuid.UUID(victim.user_id))) is None


async def test_no_email_claim_is_409(browser, provider, provider_url) -> None:
    sub = new_sub()
    await set_provider_user(provider, sub, {"name": "No Mail"})
    response = await oidc_sign_in(browser, provider, provider_url, sub)
    assert_error(response, 409, "oidc_email_unverified")


async def test_preset_user_of_the_mock_signs_in(browser, provider, provider_url) -> None:
    response = await oidc_sign_in(browser, provider, provider_url, PRESET_SUB)
    assert response.status_code == 200, response.text
    assert (await me(browser, response.json()["access_token"]))["user"]["email"] == "preset@example.com"


# --- state, replay and provider errors ------------------------------------------------------------------------


async def test_tampered_state_is_401_oidc_failed(browser, provider, provider_url, session) -> None:
    sub = new_sub()
    await set_provider_user(provider, sub, {"email": f"{sub}@example.com", "email_verified": True})
    authorize_url = await start_login(browser, provider_url)
    callback = await approve(provider, authorize_url, sub)
    assert query(callback)["state"] == query(authorize_url)["state"]
    tampered = with_query(callback, state="attacker-chosen-state")
    response = await browser.get(tampered)
    error = assert_error(response, 401, "oidc_failed")
    assert "mismatching_state" in error["message"]
    assert await session.scalar(select(DbUser).where(DbUser.email == f"{sub}@example.com")) is None


async def test_state_from_another_browser_session_is_401(oidc_app, browser, provider, provider_url, session) -> None:
    """Login CSRF: a callback started in one browser and completed in another (no matching cookie)."""
    sub = new_sub()
    await set_provider_user(provider, sub, {"email": f"{sub}@example.com", "email_verified": True})
    callback = await approve(provider, await start_login(browser, provider_url), sub)
    async with asgi_client(oidc_app, ip="198.51.100.61") as other_browser:
        response = await other_browser.get(callback)
    assert_error(response, 401, "oidc_failed")
    assert await session.scalar(select(OIDCIdentity).where(OIDCIdentity.subject == sub)) is None


async def test_a_new_login_supersedes_the_state_of_an_earlier_one(browser, provider, provider_url) -> None:
    """Only the latest authorization request of a browser session is accepted (authlib keeps one state)."""
    sub = new_sub()
    await set_provider_user(provider, sub, {"email": f"{sub}@example.com", "email_verified": True})
    earlier_callback = await approve(provider, await start_login(browser, provider_url), sub)
    await start_login(browser, provider_url)
    error = assert_error(await browser.get(earlier_callback), 401, "oidc_failed")
    assert "mismatching_state" in error["message"]


async def test_code_injected_from_another_authorization_fails_the_nonce_check(
    browser, provider, provider_url, session
) -> None:
    """An authorization code obtained for one request (nonce A), replayed into the callback of the current
    request (state B, nonce B): state matches, but the id_token's nonce does not, so sign-in is refused."""
    sub = new_sub()
    await set_provider_user(provider, sub, {"email": f"{sub}@example.com", "email_verified": True})
    authorize_a = await start_login(browser, provider_url)
    callback_a = await approve(provider, authorize_a, sub)
    authorize_b = await start_login(browser, provider_url)
    assert query(authorize_a)["nonce"] != query(authorize_b)["nonce"]
    injected = with_query(callback_a, state=query(authorize_b)["state"][0])
    error = assert_error(await browser.get(injected), 401, "oidc_failed")
    assert "nonce" in error["message"].lower()
    assert await session.scalar(select(OIDCIdentity).where(OIDCIdentity.subject == sub)) is None


async def test_replayed_callback_is_401(browser, provider, provider_url) -> None:
    sub = new_sub()
    await set_provider_user(provider, sub, {"email": f"{sub}@example.com", "email_verified": True})
    callback = await approve(provider, await start_login(browser, provider_url), sub)
    first = await browser.get(callback)
    assert first.status_code == 200, first.text
    replay = await browser.get(callback)
    assert_error(replay, 401, "oidc_failed")


async def test_missing_state_and_code_is_401(browser) -> None:
    response = await browser.get("/v1/auth/oidc/mock/callback")
    assert_error(response, 401, "oidc_failed")


async def test_user_denying_at_the_provider_is_401(browser, provider, provider_url) -> None:
    authorize_url = await start_login(browser, provider_url)
    denied = await provider.post(authorize_url, data={"action": "deny"})
    assert denied.status_code == 302, denied.text
    assert query(denied.headers["location"])["error"] == ["access_denied"]
    response = await browser.get(denied.headers["location"])
    error = assert_error(response, 401, "oidc_failed")
    assert "access_denied" in error["message"]


# --- unknown providers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/auth/oidc/nope/login", "/v1/auth/oidc/nope/callback?code=x&state=y"])
async def test_unknown_provider_is_404(browser, path) -> None:
    assert_error(await browser.get(path), 404, "not_found")


async def test_no_providers_configured_is_404(client) -> None:
    assert_error(await client.get("/v1/auth/oidc/mock/login"), 404, "not_found")



# --- provider misbehaviour ------------------------------------------------------------------------------------


async def test_a_non_string_email_claim_is_treated_as_no_email(browser, provider, provider_url, session) -> None:
    sub = new_sub()
    await set_provider_user(provider, sub, {"email": 123, "email_verified": True})
    response = await oidc_sign_in(browser, provider, provider_url, sub)
    assert_error(response, 409, "oidc_email_unverified")
    assert await session.scalar(select(OIDCIdentity).where(OIDCIdentity.subject == sub)) is None


async def test_a_malformed_verified_email_is_a_clear_400(browser, provider, provider_url, session) -> None:
    sub = new_sub()
    await set_provider_user(provider, sub, {"email": "not an email", "email_verified": True})
    response = await oidc_sign_in(browser, provider, provider_url, sub)
    assert_error(response, 400, "invalid_email")
    assert await session.scalar(select(OIDCIdentity).where(OIDCIdentity.subject == sub)) is None


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_an_unreachable_provider_is_502_not_500(app_factory) -> None:
    app = app_factory(oidc_providers={"down": provider_config(f"http://127.0.0.1:{closed_port()}")})
    async with asgi_client(app, ip="198.51.100.62") as c:
        error = assert_error(await c.get("/v1/auth/oidc/down/login"), 502, "oidc_unavailable")
    assert "down" in error["message"]


async def test_a_provider_going_down_between_login_and_callback_is_502(app_factory, session) -> None:
    """Discovery worked at login; by the callback the provider has stopped, so the token request fails."""
    sub = new_sub()
    async with contextlib.AsyncExitStack() as stack:
        with run_server_in_thread(port=0, require_nonce=True) as server:
            short_lived = f"http://127.0.0.1:{server.server_port}"
            app = app_factory(oidc_providers={"mock": provider_config(short_lived)})
            browser = await stack.enter_async_context(asgi_client(app, ip="198.51.100.63"))
            async with httpx.AsyncClient(base_url=short_lived, timeout=10) as its_provider:
                await set_provider_user(its_provider, sub, {"email": f"{sub}@example.com", "email_verified": True})
                callback = await approve(its_provider, await start_login(browser, short_lived), sub)
        # The provider has stopped; the browser comes back with a valid code and state.
        assert_error(await browser.get(callback), 502, "oidc_unavailable")
    assert await session.scalar(select(OIDCIdentity).where(OIDCIdentity.subject == sub)) is None
