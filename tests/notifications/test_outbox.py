"""The email outbox against a real SMTP server (aiosmtpd): delivery, retries with backoff, failure, the log
fallback, templates, SMTP AUTH, and one run of the real procrastinate worker."""

from __future__ import annotations

import logging
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import BigInteger, Column, MetaData, String, Table, delete, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.config import Settings
from jushostit.kit import jobs
from jushostit.kit.db import utcnow
from jushostit.models import EmailOutbox, EmailStatus
from jushostit.notifications import service
from jushostit.notifications.repository import OutboxRepository
from jushostit.notifications.templates import TEMPLATES, render
from tests.smtp_server import Authenticator, free_port, smtp_server

# procrastinate's own table, read to see the job the commit deferred and what the worker made of it.
jobs_table = Table(
    "procrastinate_jobs",
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("task_name", String),
    Column("status", String),
    Column("args", JSONB),
)


def smtp_settings(settings: Settings, port: int, **overrides: Any) -> Settings:
    return settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port, **overrides})


async def outbox_email(
    session: AsyncSession, to: str = "reader@example.com", *, template: str = "signup_existing", **values: str
) -> EmailOutbox:
    values = values or {"account_name": "Outbox Co", "base_url": "https://cp.example.com"}
    subject, body = render(template, values)
    return await OutboxRepository(session).add(EmailOutbox(to_address=to, template=template, subject=subject, body=body))


async def reload(session: AsyncSession, email_id: uuid.UUID) -> EmailOutbox:
    await session.flush()  # what deliver() changed, as the job's unit of work would commit it
    session.expire_all()
    email = await session.get(EmailOutbox, email_id)
    assert email is not None
    return email


# --- delivery by SMTP ---------------------------------------------------------------------------------------


async def test_deliver_sends_through_smtp(session, settings) -> None:
    email = await outbox_email(session, "reader@example.com")
    with smtp_server() as smtp:
        now = utcnow()
        status = await service.deliver(session, smtp_settings(settings, smtp.port), email.id, now)
    assert status == EmailStatus.sent
    assert len(smtp.sink.messages) == 1
    received = smtp.sink.messages[0]
    assert received.rcpt_tos == ["reader@example.com"]
    assert received.mail_from == "noreply@localhost"
    assert received.message["To"] == "reader@example.com"
    assert received.message["From"] == "JusHostIt <noreply@localhost>"
    assert received.message["Subject"] == "Someone tried to sign up with your address"
    assert received.message["Message-ID"] == f"<{email.id}@jushostit>"
    assert "already has a user" in received.body and "https://cp.example.com/auth/forgot-password" in received.body
    stored = await reload(session, email.id)
    assert (stored.status, stored.attempts, stored.sent_at, stored.last_error) == (EmailStatus.sent, 1, now, None)
    # Sent once: a second delivery of the same id does nothing.
    assert await service.deliver(session, smtp_settings(settings, smtp.port), email.id, utcnow()) is None
    assert len(smtp.sink.messages) == 1


async def test_unreachable_server_backs_off_exponentially_then_fails(session, settings) -> None:
    closed = smtp_settings(settings, free_port(), email_max_attempts=4)  # nothing listens there
    email = await outbox_email(session)
    now = utcnow()
    expected_delays = [30, 60, 120]
    for attempt, delay in enumerate(expected_delays, start=1):
        status = await service.deliver(session, closed, email.id, now)
        assert status == EmailStatus.pending
        stored = await reload(session, email.id)
        assert stored.attempts == attempt
        assert stored.next_attempt_at == now + timedelta(seconds=delay)
        assert stored.last_error and stored.sent_at is None
        # Not due before the backoff has passed.
        assert await service.deliver(session, closed, email.id, stored.next_attempt_at - timedelta(seconds=1)) is None
        assert (await reload(session, email.id)).attempts == attempt
        now = stored.next_attempt_at
    assert await service.deliver(session, closed, email.id, now) == EmailStatus.failed
    stored = await reload(session, email.id)
    assert (stored.status, stored.attempts) == (EmailStatus.failed, 4)
    # A failed email is never tried again.
    assert await service.deliver(session, closed, email.id, now + timedelta(days=1)) is None
    assert (await reload(session, email.id)).attempts == 4
    assert email.id not in await service.due_emails(session, now + timedelta(days=1))


def test_backoff_doubles_from_30_seconds_and_is_capped_at_an_hour() -> None:
    assert [service.retry_delay(n).total_seconds() for n in range(1, 9)] == [30, 60, 120, 240, 480, 960, 1920, 3600]
    assert service.retry_delay(30) == timedelta(hours=1)


async def test_server_stopped_then_back_delivers_on_the_retry(session, settings) -> None:
    email = await outbox_email(session, "later@example.com")
    with smtp_server() as smtp:
        port = smtp.port
        smtp.stop()
        now = utcnow()
        configured = smtp_settings(settings, port)
        assert await service.deliver(session, configured, email.id, now) == EmailStatus.pending
        stored = await reload(session, email.id)
        assert stored.attempts == 1 and stored.next_attempt_at == now + timedelta(seconds=30)
        assert "Connect" in stored.last_error or "refused" in stored.last_error.lower()
    assert email.id not in await service.due_emails(session, now)
    assert email.id in await service.due_emails(session, now + timedelta(seconds=30))
    with smtp_server(port) as smtp:  # the mail server is back on the same address
        later = now + timedelta(seconds=30)
        assert await service.deliver(session, configured, email.id, later) == EmailStatus.sent
        assert [m.rcpt_tos for m in smtp.sink.messages] == [["later@example.com"]]
    stored = await reload(session, email.id)
    assert (stored.status, stored.attempts, stored.sent_at, stored.last_error) == (EmailStatus.sent, 2, later, None)


async def test_a_row_not_yet_due_is_not_sent(session, settings) -> None:
    email = await outbox_email(session, "notyet@example.com")
    now = utcnow()
    email.next_attempt_at = now + timedelta(minutes=5)
    await session.flush()
    with smtp_server() as smtp:
        configured = smtp_settings(settings, smtp.port)
        assert await service.deliver(session, configured, email.id, now) is None
        assert smtp.sink.messages == []
        assert (await reload(session, email.id)).attempts == 0
        assert email.id not in await service.due_emails(session, now)
        assert await service.deliver(session, configured, email.id, now + timedelta(minutes=5)) == EmailStatus.sent
        assert len(smtp.sink.messages) == 1


async def test_without_smtp_the_log_is_the_mailbox(session, settings, caplog) -> None:
    assert settings.smtp_host is None and not settings.email_via_smtp
    email = await outbox_email(session, "local@example.com", template="magic_link", link="http://x/l?token=t0k", minutes="15")
    caplog.set_level(logging.INFO)
    now = utcnow()
    assert await service.deliver(session, settings, email.id, now) == EmailStatus.sent
    events = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "email.delivered_to_log"]
    assert len(events) == 1
    assert events[0]["to"] == "local@example.com"
    assert events[0]["subject"] == "Your sign-in link"
    assert "http://x/l?token=t0k" in events[0]["body"]
    stored = await reload(session, email.id)
    assert (stored.status, stored.attempts, stored.sent_at) == (EmailStatus.sent, 1, now)


# --- SMTP AUTH ----------------------------------------------------------------------------------------------


async def test_smtp_auth_with_username_and_password(session, settings) -> None:
    authenticator = Authenticator("mailer", "s3cret-smtp-pass")
    email = await outbox_email(session, "authed@example.com")
    with smtp_server(authenticator=authenticator) as smtp:
        good = smtp_settings(settings, smtp.port, smtp_username="mailer", smtp_password=SecretStr("s3cret-smtp-pass"))
        assert await service.deliver(session, good, email.id, utcnow()) == EmailStatus.sent
        assert [(m.login, m.rcpt_tos) for m in smtp.sink.messages] == [("mailer", ["authed@example.com"])]
        assert authenticator.attempts == ["mailer"]


async def test_smtp_auth_refused_is_retried_and_the_password_is_not_kept(session, settings) -> None:
    authenticator = Authenticator("mailer", "s3cret-smtp-pass")
    email = await outbox_email(session, "refused@example.com")
    with smtp_server(authenticator=authenticator) as smtp:
        wrong = smtp_settings(settings, smtp.port, smtp_username="mailer", smtp_password=SecretStr("not-the-pass-42"))
        now = utcnow()
        assert await service.deliver(session, wrong, email.id, now) == EmailStatus.pending
        anonymous = smtp_settings(settings, smtp.port)  # no credentials: the server requires AUTH
        email2 = await outbox_email(session, "anon@example.com")
        email2_id = email2.id
        assert await service.deliver(session, anonymous, email2_id, utcnow()) == EmailStatus.pending
        assert smtp.sink.messages == []
    stored = await reload(session, email.id)
    assert stored.attempts == 1 and stored.next_attempt_at == now + timedelta(seconds=30)
    assert "Authentication" in stored.last_error and "not-the-pass-42" not in stored.last_error
    assert (await reload(session, email2_id)).last_error


# --- templates, as the real flows fill them -------------------------------------------------------------------


async def test_templates_render_from_the_real_flows(client, session, signup) -> None:
    owner = await signup("tmpl-owner@example.com", account_name="Template Co")
    assert (await client.post("/v1/auth/magic-link", json={"email": owner.email})).status_code == 202
    invited = await client.post(
        f"/v1/accounts/{owner.account_id}/invites", json={"email": "tmpl-guest@example.com", "role": "admin"},
        headers=owner.headers,
    )
    assert invited.status_code == 201
    rows = {
        e.template: e
        for e in (await session.scalars(
            select(EmailOutbox).where(EmailOutbox.to_address.in_(["tmpl-owner@example.com", "tmpl-guest@example.com"]))
        )).all()
    }
    assert set(rows) == {"verify_email", "magic_link", "invite"} and set(rows) <= set(TEMPLATES)
    for email in rows.values():
        assert "$" not in email.subject and "$" not in email.body
        assert email.status == EmailStatus.pending and email.attempts == 0
    assert rows["verify_email"].subject == "Confirm your address for JusHostIt"
    assert '"Template Co"' in rows["verify_email"].body and "within 48 hours" in rows["verify_email"].body
    assert re.search(r"http://testserver/auth/verify-email\?token=jhv_[A-Za-z0-9_\-]{20,}", rows["verify_email"].body)
    assert rows["magic_link"].subject == "Your sign-in link"
    assert re.search(r"http://testserver/auth/magic-link\?token=jhm_[A-Za-z0-9_\-]{20,}", rows["magic_link"].body)
    assert "expires in 15 minutes" in rows["magic_link"].body
    assert rows["invite"].subject == "You are invited to Template Co"
    body = rows["invite"].body
    assert "tmpl-owner@example.com invited you" in body and "as admin" in body and "within 7 days" in body
    assert re.search(r"/invites/accept\?token=\S{20,}", body) and "Sign in (or sign up) as tmpl-guest@example.com" in body


def test_a_missing_template_value_is_an_error_not_a_dollar_in_an_email() -> None:
    with pytest.raises(KeyError):
        render("invite", {"account_name": "A"})


# --- the real worker path -------------------------------------------------------------------------------------


@pytest.fixture
def worker_smtp(container) -> Any:
    """A live SMTP server, and the running container's settings pointed at it for the test."""
    original = container.settings
    with smtp_server() as smtp:
        container.settings = smtp_settings(original, smtp.port)
        try:
            yield smtp
        finally:
            container.settings = original


async def test_procrastinate_worker_delivers_a_committed_email(container, worker_smtp) -> None:
    address = f"worker-{uuid.uuid4().hex[:8]}@example.com"
    async with container.database.unit_of_work() as s:
        queued = await service.queue_email(
            s, to=address, template="signup_existing", values={"account_name": "Worker Co", "base_url": "https://w.example"}
        )
        email_id = queued.id
    try:
        async with container.database.engine.connect() as conn:
            job = (
                await conn.execute(
                    select(jobs_table.c.status).where(
                        jobs_table.c.task_name == service.DELIVER_TASK, jobs_table.c.args["email_id"].astext == str(email_id)
                    )
                )
            ).all()
        assert [row.status for row in job] == ["todo"]  # deferred after the commit

        await jobs.app.run_worker_async(wait=False, install_signal_handlers=False, queues=["email"])

        delivered = [m for m in worker_smtp.sink.messages if m.rcpt_tos == [address]]
        assert len(delivered) == 1
        assert delivered[0].message["Subject"] == "Someone tried to sign up with your address"
        assert "https://w.example/auth/forgot-password" in delivered[0].body
        async with container.database.sessionmaker() as s:
            stored = await s.get(EmailOutbox, email_id)
            assert stored is not None and stored.status == EmailStatus.sent and stored.attempts == 1
        async with container.database.engine.connect() as conn:
            statuses = (
                await conn.execute(
                    select(jobs_table.c.status).where(jobs_table.c.args["email_id"].astext == str(email_id))
                )
            ).scalars().all()
        assert statuses == ["succeeded"]
    finally:
        async with container.database.unit_of_work() as s:
            await s.execute(delete(EmailOutbox).where(EmailOutbox.id == email_id))

