"""Canary secrets: plant distinctive passwords, tokens, API keys and Authorization headers, drive the flows
that handle them (including the failures), and scan every captured log line for them.

Everything the app logs goes through the root handler that `configure_logging` installs (structured JSON on
stderr); the test points that handler at pytest's capture of stderr (capfd) and also reads caplog's records,
which hold each event *before* it is rendered. Neither may contain a canary.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from sqlalchemy import select

from jushostit.kit.db import utcnow
from jushostit.models import EmailOutbox
from jushostit.notifications import service as notifications
from tests.conftest import asgi_client, complete_sign_up, token_in
from tests.smtp_server import smtp_server


class _CurrentStderr:
    """Writes to whatever sys.stderr is at the time of writing: during the test, capfd's capture."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture
def log_capture(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Iterator[Any]:
    """Route the app's JSON log handler to capfd's stderr for this test, at the most verbose level."""
    root = logging.getLogger()
    json_handlers = [
        h for h in root.handlers
        if isinstance(h, logging.StreamHandler) and isinstance(h.formatter, structlog.stdlib.ProcessorFormatter)
    ]
    assert json_handlers, "configure_logging() installs a JSON handler on the root logger"
    previous = [(h, h.stream) for h in json_handlers]
    for handler in json_handlers:
        with handler.lock or contextlib.nullcontext():
            handler.stream = _CurrentStderr()
    caplog.set_level(logging.DEBUG)  # whatever an operator may turn on must be clean too
    # aiosmtpd is the test's stand-in for the mail provider, not our code: at DEBUG it logs the mail it receives.
    mail_log = logging.getLogger("mail.log")
    mail_log_level = mail_log.level
    mail_log.setLevel(logging.WARNING)
    capfd.readouterr()  # start empty
    try:
        yield capfd, caplog
    finally:
        mail_log.setLevel(mail_log_level)
        for handler, stream in previous:
            with handler.lock or contextlib.nullcontext():
                handler.stream = stream


def everything_logged(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    out, err = capfd.readouterr()
    parts = [out, err, caplog.text]
    for record in caplog.records:
        parts += [repr(record.msg), repr(record.args), record.exc_text or "", repr(getattr(record, "__dict__", {}))]
    return "\n".join(parts)


async def test_no_canary_secret_reaches_the_logs(app_factory, container, session, log_capture, last_email) -> None:
    capfd, caplog = log_capture
    canary = uuid.uuid4().hex[:12]
    password = f"Canary-Pass-{canary}-word"
    wrong_password = f"Canary-Wrong-{canary}-word"
    bogus_bearer = f"canary.bogus.{canary}"
    bogus_api_key = f"jhi_CanaryBogusKey{canary}"
    email = f"canary-{canary}@example.com"
    planted: dict[str, str] = {"password": password, "wrong password": wrong_password,
                               "bogus bearer": bogus_bearer, "bogus api key": bogus_api_key}

    with smtp_server() as smtp:
        # SMTP delivery is configured, so a magic link goes to the mailbox, not to the log.
        app = app_factory(smtp_host=smtp.host, smtp_port=smtp.port)
        async with asgi_client(app) as client:
            signup = await client.post(
                "/v1/auth/signup", json={"email": email, "password": password, "account_name": "Canary Co"}
            )
            assert signup.status_code == 202, signup.text
            planted["verification token"] = token_in(await last_email(email, "verify_email"))
            who = await complete_sign_up(client, last_email, email, password=password)
            planted["access token"] = who.access_token
            planted["refresh token"] = who.refresh_token

            # Validation errors on bodies that carry the password: wrong type, unknown field, malformed JSON.
            invalid = await client.post(
                "/v1/auth/signup",
                json={"email": email, "password": password, "account_name": 12345, "is_platform_admin": True},
            )
            assert invalid.status_code == 422
            assert password not in invalid.text  # the error names the fields, never echoes their values
            malformed = await client.post(
                "/v1/auth/login",
                content=f'{{"email": "{email}", "password": "{password}"'.encode(),
                headers={"Content-Type": "application/json"},
            )
            assert malformed.status_code == 422 and malformed.json()["error"]["code"] == "invalid_json"
            assert password not in malformed.text
            typed = await client.post("/v1/auth/login", json={"email": email, "password": [password]})
            assert typed.status_code == 422 and password not in typed.text

        async with asgi_client(app, ip="198.51.100.23") as client:  # a second client, from another address
            login = await client.post("/v1/auth/login", json={"email": email, "password": password})
            assert login.status_code == 200, login.text
            access, refresh = login.json()["access_token"], login.json()["refresh_token"]
            planted |= {"access token": access, "refresh token": refresh, "authorization header": f"Bearer {access}"}

            me = await client.get("/v1/me", headers={"Authorization": f"Bearer {access}"})
            assert me.status_code == 200
            in_query = await client.get(f"/v1/me?access_token={access}&api_key={bogus_api_key}")
            assert in_query.status_code == 401
            for bad in (f"Bearer {bogus_bearer}", f"Bearer {bogus_api_key}", f"Basic {bogus_bearer}", bogus_bearer):
                refused = await client.get("/v1/me", headers={"Authorization": bad})
                assert refused.status_code == 401

            key = await client.post(
                "/v1/me/api-keys", json={"name": "canary key", "scopes": ["account:read"]},
                headers={"Authorization": f"Bearer {access}"},
            )
            assert key.status_code == 201
            planted["api key"] = key.json()["key"]
            with_key = await client.get("/v1/me", headers={"Authorization": f"Bearer {planted['api key']}"})
            assert with_key.status_code == 200
            needs_session = await client.post(
                "/v1/me/api-keys", json={"name": "x", "scopes": ["admin"]},
                headers={"Authorization": f"Bearer {planted['api key']}"},
            )
            assert needs_session.status_code == 403

            # Refresh rotation, then reuse of the spent token (revokes the family).
            rotated = await client.post("/v1/auth/refresh", json={"refresh_token": refresh})
            assert rotated.status_code == 200
            planted["rotated access token"] = rotated.json()["access_token"]
            planted["rotated refresh token"] = rotated.json()["refresh_token"]
            reused = await client.post("/v1/auth/refresh", json={"refresh_token": refresh})
            assert reused.status_code == 401 and reused.json()["error"]["code"] == "refresh_token_reused"
            revoked = await client.post("/v1/auth/refresh", json={"refresh_token": planted["rotated refresh token"]})
            assert revoked.status_code == 401
            bogus_refresh = await client.post("/v1/auth/refresh", json={"refresh_token": f"jhr_{canary}bogus"})
            assert bogus_refresh.status_code == 401
            planted["bogus refresh token"] = f"jhr_{canary}bogus"

            # Magic link: queued, delivered by SMTP to the real server, consumed once, refused the second time.
            asked = await client.post("/v1/auth/magic-link", json={"email": email})
            assert asked.status_code == 202
            queued = await session.scalar(
                select(EmailOutbox).where(EmailOutbox.to_address == email, EmailOutbox.template == "magic_link")
            )
            assert queued is not None
            # The delivery job's work, with the settings the app runs on (app_factory put them on the container).
            status = await notifications.deliver(session, container.settings, queued.id, utcnow())
            assert status == "sent"
            [message] = [m for m in smtp.sink.messages if m.rcpt_tos == [email]]
            match = re.search(r"token=(jhm_[A-Za-z0-9_\-]+)", message.body)
            assert match, message.body
            planted["magic link token"] = match.group(1)
            consumed = await client.post("/v1/auth/magic-link/consume", json={"token": planted["magic link token"]})
            assert consumed.status_code == 200
            planted["magic access token"] = consumed.json()["access_token"]
            planted["magic refresh token"] = consumed.json()["refresh_token"]
            again = await client.post("/v1/auth/magic-link/consume", json={"token": planted["magic link token"]})
            assert again.status_code == 401
            logout = await client.post(
                "/v1/auth/logout", headers={"Authorization": f"Bearer {planted['magic access token']}"}
            )
            assert logout.status_code == 204

            # Wrong password, repeatedly (crosses the audit threshold and locks sign-in), and an unknown user.
            for _ in range(6):
                wrong = await client.post("/v1/auth/login", json={"email": email, "password": wrong_password})
                assert wrong.status_code in (401, 429)
            nobody = await client.post(
                "/v1/auth/login", json={"email": f"nobody-{canary}@example.com", "password": wrong_password}
            )
            assert nobody.status_code in (401, 429)


    logged = everything_logged(capfd, caplog)
    # The capture really saw the app's logs (else this test would pass on nothing).
    assert '"event": "http.request"' in logged and '"path": "/v1/auth/refresh"' in logged
    assert '"status": 401' in logged and '"status": 429' in logged
    assert len(caplog.records) > 20
    leaked = {name: value for name, value in planted.items() if value in logged}
    assert leaked == {}, f"secrets found in the logs: {sorted(leaked)}"
    # Parts of the Authorization header and tokens are not logged either (e.g. a JWT's signature).
    for name in ("access token", "rotated access token", "magic access token"):
        signature = planted[name].rsplit(".", 1)[-1]
        assert signature not in logged, name

