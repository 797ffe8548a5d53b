"""Failed sign-ins slow down per account (email) and per IP; auth endpoints are rate-limited per IP and route.

Time is frozen with time_machine (tick=False) so a one-second lock cannot lapse between two requests on a slow
machine, and moved forward to prove the lock lifts; nothing sleeps. The rate limiter lives in process memory,
keyed by IP and route, so each test uses its own client IP.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import time_machine
from sqlalchemy import func, select

from jushostit.models import AuditEntry, AuthSession, AuthThrottle, User
from tests.conftest import TEST_PASSWORD, asgi_client

WRONG = "definitely the wrong password"


def unique_ip() -> str:
    """A documentation-range address no other test uses (the in-memory limiter outlives a test)."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def assert_429(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == "rate_limited"
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    assert body["error"]["details"] == {"retry_after": retry_after}
    return retry_after


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/v1/auth/login", json={"email": email, "password": password})


async def throttle(session, key: str) -> AuthThrottle | None:
    """The row as the database has it now (never a stale copy from the session's identity map)."""
    return await session.scalar(
        select(AuthThrottle).where(AuthThrottle.key == key).execution_options(populate_existing=True)
    )


@pytest.fixture
def frozen() -> Any:
    start = datetime.now(UTC).replace(microsecond=0)
    with time_machine.travel(start, tick=False) as traveller:
        yield traveller


# --- slowing down failed sign-ins ------------------------------------------------------------------------------


async def test_after_the_threshold_even_the_right_password_gets_429(app, signup, settings, session, frozen) -> None:
    user = await signup()
    threshold = settings.login_failures_before_delay
    async with asgi_client(app, ip=unique_ip()) as c:
        for attempt in range(threshold):
            response = await login(c, user.email, WRONG)
            assert response.status_code == 401, (attempt, response.text)
            assert response.json()["error"]["code"] == "invalid_credentials"
        retry_after = assert_429(await login(c, user.email, TEST_PASSWORD))
    assert retry_after <= 2  # the first lock is one second (ceiling-rounded up)
    # Refused attempts while locked are not counted as failures.
    assert (await throttle(session, f"email:{user.email}")).failures == threshold


async def test_below_the_threshold_the_right_password_still_works(app, signup, settings, frozen) -> None:
    user = await signup()
    async with asgi_client(app, ip=unique_ip()) as c:
        for _ in range(settings.login_failures_before_delay - 1):
            assert (await login(c, user.email, WRONG)).status_code == 401
        assert (await login(c, user.email, TEST_PASSWORD)).status_code == 200


async def test_the_lock_lifts_after_the_delay_and_then_doubles(app, signup, settings, session, frozen) -> None:
    user = await signup()
    async with asgi_client(app, ip=unique_ip()) as c:
        for _ in range(settings.login_failures_before_delay):
            await login(c, user.email, WRONG)
        first_wait = assert_429(await login(c, user.email, TEST_PASSWORD))
        row = await throttle(session, f"email:{user.email}")
        assert row.locked_until == datetime.now(UTC) + timedelta(seconds=1)

        frozen.shift(timedelta(seconds=0.5))
        assert_429(await login(c, user.email, TEST_PASSWORD))  # still locked

        frozen.shift(timedelta(seconds=first_wait))
        # One more failure after the lock lifted: the next lock is twice as long.
        assert (await login(c, user.email, WRONG)).status_code == 401
        second_wait = assert_429(await login(c, user.email, TEST_PASSWORD))
        assert second_wait > first_wait
        row = await throttle(session, f"email:{user.email}")
        assert row.locked_until == datetime.now(UTC) + timedelta(seconds=2)

        frozen.shift(timedelta(seconds=second_wait))
        ok = await login(c, user.email, TEST_PASSWORD)
        assert ok.status_code == 200, ok.text
        me = await c.get("/v1/me", headers={"Authorization": f"Bearer {ok.json()['access_token']}"})
        assert me.status_code == 200
    # Success forgives the account's failures (the IP keeps its count).
    assert await throttle(session, f"email:{user.email}") is None


async def test_the_delay_is_capped(app_factory, signup, session, frozen) -> None:
    app = app_factory(login_failures_before_delay=1, login_max_delay_seconds=4)
    ip = unique_ip()
    email = f"capped-{uuid.uuid4().hex[:8]}@example.com"
    waits = []
    async with asgi_client(app, ip=ip) as c:
        for _ in range(6):
            assert (await login(c, email, WRONG)).status_code == 401
            wait = assert_429(await login(c, email, WRONG))
            waits.append(wait)
            frozen.shift(timedelta(seconds=wait))
    row = await throttle(session, f"email:{email}")
    assert row.failures == 6
    assert max(waits) <= 4 + 1
    assert waits[-1] == waits[-2]  # it stopped doubling


async def test_unknown_emails_are_throttled_like_known_ones(app, settings, session, frozen) -> None:
    email = f"ghost-{uuid.uuid4().hex[:8]}@example.com"
    async with asgi_client(app, ip=unique_ip()) as c:
        for _ in range(settings.login_failures_before_delay):
            response = await login(c, email, WRONG)
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_credentials"
        assert_429(await login(c, email, WRONG))
    assert (await throttle(session, f"email:{email}")).failures == settings.login_failures_before_delay


async def test_failures_for_one_email_from_many_ips_lock_that_email(app, signup, settings, frozen) -> None:
    user = await signup()
    for _ in range(settings.login_failures_before_delay):
        async with asgi_client(app, ip=unique_ip()) as c:
            assert (await login(c, user.email, WRONG)).status_code == 401
    async with asgi_client(app, ip=unique_ip()) as fresh:
        assert_429(await login(fresh, user.email, TEST_PASSWORD))


async def test_failures_for_made_up_addresses_never_block_a_real_users_correct_password_on_that_ip(
    app, signup, settings, session, frozen
) -> None:
    """An office or a load balancer shares one IP: someone else's failures there must not lock a real user
    out, yet the locked IP gets nothing more out of guessing, for known and unknown addresses alike."""
    victim = await signup()
    bystander = await signup()
    shared_ip = unique_ip()
    async with asgi_client(app, ip=shared_ip) as attacker:
        for _ in range(settings.login_failures_before_delay + 1):
            other = f"spray-{uuid.uuid4().hex[:8]}@example.com"
            assert (await login(attacker, other, WRONG)).status_code in (401, 429)
        assert (await throttle(session, f"ip-unknown:{shared_ip}")).failures >= settings.login_failures_before_delay
        # A wrong guess from the locked IP: 429 whether or not the address exists (no enumeration)...
        assert_429(await login(attacker, f"spray-{uuid.uuid4().hex[:8]}@example.com", WRONG))
        assert_429(await login(attacker, bystander.email, WRONG))
        # ...and the bystander now has a streak of their own, so from this IP even their right password waits.
        assert_429(await login(attacker, bystander.email, TEST_PASSWORD))
        # The victim has no streak of their own: their right password works from the very same IP.
        ok = await login(attacker, victim.email, TEST_PASSWORD)
        assert ok.status_code == 200, ok.text
    assert await throttle(session, f"email:{victim.email}") is None
    # Known and unknown addresses are counted apart.
    assert (await throttle(session, f"ip-known:{shared_ip}")).failures == 1
    # From elsewhere, the bystander's one failure locks nothing.
    async with asgi_client(app, ip=unique_ip()) as own:
        assert (await login(own, bystander.email, TEST_PASSWORD)).status_code == 200


async def test_failures_against_known_addresses_lock_that_ip_for_accounts_with_a_streak(
    app, signup, settings, session, frozen
) -> None:
    users = [await signup() for _ in range(settings.login_failures_before_delay)]
    ip = unique_ip()
    async with asgi_client(app, ip=ip) as sprayer:
        for user in users:  # one guess per account: no account reaches its own lock
            assert (await login(sprayer, user.email, WRONG)).status_code == 401
        assert (await throttle(session, f"ip-known:{ip}")).locked_until is not None
        assert await throttle(session, f"ip-unknown:{ip}") is None
        # Every account it guessed at is now closed to this IP, right password or not.
        assert_429(await login(sprayer, users[0].email, TEST_PASSWORD))


async def test_failures_further_apart_than_the_window_start_a_new_streak(app, session, frozen) -> None:
    from jushostit.auth.service import FAILURE_STREAK_WINDOW

    office_ip = unique_ip()
    async with asgi_client(app, ip=office_ip) as office:
        for _ in range(3):
            assert (await login(office, f"typo-{uuid.uuid4().hex[:6]}@example.com", WRONG)).status_code == 401
        assert (await throttle(session, f"ip-unknown:{office_ip}")).failures == 3
        frozen.shift(FAILURE_STREAK_WINDOW + timedelta(seconds=1))
        assert (await login(office, f"typo-{uuid.uuid4().hex[:6]}@example.com", WRONG)).status_code == 401
    assert (await throttle(session, f"ip-unknown:{office_ip}")).failures == 1


async def test_failure_count_is_committed_despite_the_401(app, signup, session, frozen) -> None:
    user = await signup()
    ip = unique_ip()
    async with asgi_client(app, ip=ip) as c:
        response = await login(c, user.email, WRONG)
    assert response.status_code == 401
    by_email = await throttle(session, f"email:{user.email}")
    by_ip = await throttle(session, f"ip-known:{ip}")
    assert by_email is not None and by_email.failures == 1 and by_email.locked_until is None
    assert by_ip is not None and by_ip.failures == 1
    assert by_email.last_failure_at == datetime.now(UTC)
    # Only the count was kept: the refused request started no login session (sign-up's sign-in is the only one).
    sessions = select(func.count()).select_from(AuthSession).where(AuthSession.user_id == uuid.UUID(user.user_id))
    assert await session.scalar(sessions) == 1
    async with asgi_client(app, ip=ip) as c:
        assert (await login(c, user.email, WRONG)).status_code == 401
    assert (await throttle(session, f"email:{user.email}")).failures == 2


async def test_the_audit_entry_is_written_once_when_the_threshold_is_reached(
    app, signup, settings, session, frozen
) -> None:
    user = await signup()
    ip = unique_ip()
    threshold = settings.login_failures_audit_threshold

    async def exceeded() -> list[AuditEntry]:
        rows = await session.scalars(
            select(AuditEntry).where(
                AuditEntry.action == "auth.login_failures_exceeded", AuditEntry.target_id == user.user_id
            )
        )
        return list(rows.all())

    async with asgi_client(app, ip=ip) as c:
        for _ in range(threshold - 1):
            assert (await login(c, user.email, WRONG)).status_code == 401
        assert await exceeded() == []
        assert (await login(c, user.email, WRONG)).status_code == 401
        entries = await exceeded()
        assert len(entries) == 1
        entry = entries[0]
        assert entry.actor_type == "anonymous" and entry.actor_id is None
        assert entry.target_type == "user"
        assert entry.ip == ip
        assert entry.after == {"email": user.email, "failures": threshold}
        assert WRONG not in str(entry.after) and entry.request_id

        # More failures after the lock lifts do not repeat it.
        for _ in range(2):
            frozen.shift(timedelta(seconds=settings.login_max_delay_seconds + 1))
            assert (await login(c, user.email, WRONG)).status_code == 401
    assert len(await exceeded()) == 1


async def test_an_unknown_email_reaching_the_threshold_is_audited_without_a_target(
    app, settings, session, frozen
) -> None:
    email = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    async with asgi_client(app, ip=unique_ip()) as c:
        for _ in range(settings.login_failures_audit_threshold):
            await login(c, email, WRONG)
    count = await session.scalar(
        select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "auth.login_failures_exceeded",
            AuditEntry.after["email"].astext == email,
            AuditEntry.target_id.is_(None),
        )
    )
    assert count == 1


# --- rate limiting of auth endpoints --------------------------------------------------------------------------


async def test_fourth_signup_from_one_ip_within_the_window_is_429(app_factory, session) -> None:
    app = app_factory(auth_rate_limit="3/minute")
    ip = unique_ip()
    emails = [f"burst-{i}-{uuid.uuid4().hex[:8]}@example.com" for i in range(4)]
    async with asgi_client(app, ip=ip) as c:
        for email in emails[:3]:
            response = await c.post(
                "/v1/auth/signup", json={"email": email, "password": TEST_PASSWORD, "account_name": "Burst"}
            )
            assert response.status_code == 202, response.text
        refused = await c.post(
            "/v1/auth/signup", json={"email": emails[3], "password": TEST_PASSWORD, "account_name": "Burst"}
        )
        retry_after = assert_429(refused)
        assert retry_after <= 61
        # The limit is per route: login from the same IP is still open.
        assert (await login(c, emails[0], TEST_PASSWORD)).status_code == 200
    assert await session.scalar(select(User).where(User.email == emails[3])) is None
    # Another IP is unaffected.
    async with asgi_client(app, ip=unique_ip()) as other:
        response = await other.post(
            "/v1/auth/signup", json={"email": emails[3], "password": TEST_PASSWORD, "account_name": "Burst"}
        )
        assert response.status_code == 202, response.text


async def test_fourth_login_from_one_ip_is_429_even_with_the_right_password(app_factory, signup) -> None:
    user = await signup()
    app = app_factory(auth_rate_limit="3/minute")
    async with asgi_client(app, ip=unique_ip()) as c:
        for _ in range(3):
            assert (await login(c, user.email, TEST_PASSWORD)).status_code == 200
        assert_429(await login(c, user.email, TEST_PASSWORD))


async def test_the_rate_limit_window_moves_on(app_factory) -> None:
    app = app_factory(auth_rate_limit="2/minute")
    start = datetime.now(UTC)
    async with asgi_client(app, ip=unique_ip()) as c:
        with time_machine.travel(start, tick=False):
            for _ in range(2):
                assert (await c.post("/v1/auth/magic-link", json={"email": "a@example.com"})).status_code == 202
            wait = assert_429(await c.post("/v1/auth/magic-link", json={"email": "a@example.com"}))
            assert wait <= 61
        with time_machine.travel(start + timedelta(seconds=wait + 1), tick=False):
            assert (await c.post("/v1/auth/magic-link", json={"email": "a@example.com"})).status_code == 202


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/auth/refresh", {"refresh_token": "jhr_nope"}),
        ("POST", "/v1/auth/magic-link", {"email": "someone@example.com"}),
        ("POST", "/v1/auth/magic-link/consume", {"token": "jhm_nope"}),
        ("GET", "/v1/auth/oidc/whatever/login", None),
        ("GET", "/v1/auth/oidc/whatever/callback", None),
    ],
)
async def test_every_auth_endpoint_is_rate_limited(app_factory, method, path, body) -> None:
    app = app_factory(auth_rate_limit="3/minute")
    async with asgi_client(app, ip=unique_ip()) as c:
        statuses = [(await c.request(method, path, json=body)).status_code for _ in range(3)]
        assert 429 not in statuses
        assert_429(await c.request(method, path, json=body))


async def test_malformed_requests_count_against_the_limit_too(app_factory) -> None:
    app = app_factory(auth_rate_limit="3/minute")
    async with asgi_client(app, ip=unique_ip()) as c:
        for _ in range(3):
            response = await c.post("/v1/auth/login", json={"email": 1})
            assert response.status_code == 422
        assert_429(await c.post("/v1/auth/login", json={"email": 1}))
