"""The email outbox: queue in the caller's transaction, deliver from a job (SMTP, or the log by default)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from email.message import EmailMessage

import aiosmtplib
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.config import Settings
from jushostit.kit import jobs
from jushostit.kit.db import utcnow
from jushostit.kit.logging import MAILBOX_EVENT
from jushostit.models import EmailOutbox, EmailStatus
from jushostit.notifications.repository import OutboxRepository
from jushostit.notifications.templates import render

log = structlog.get_logger(__name__)

DELIVER_TASK = "email.deliver"
RETRY_BASE_SECONDS = 30
RETRY_MAX_SECONDS = 3600


async def queue_email(session: AsyncSession, *, to: str, template: str, values: dict[str, str]) -> EmailOutbox:
    subject, body = render(template, values)
    email = await OutboxRepository(session).add(
        EmailOutbox(to_address=to, template=template, subject=subject, body=body)
    )
    jobs.enqueue(DELIVER_TASK, email_id=str(email.id))
    return email


async def address_has_room(session: AsyncSession, *, to: str, templates: frozenset[str], per_hour: int) -> bool:
    """Whether `to` got fewer than `per_hour` e-mails of these templates in the last hour (no e-mail bombing of
    one address from many clients). Holds a lock on the address until the caller's transaction ends."""
    since = utcnow() - timedelta(hours=1)
    if await OutboxRepository(session).count_to(to, templates, since) < per_hour:
        return True
    log.warning("email.address_limit_reached", templates=sorted(templates))
    return False


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff after the n-th failed attempt: 30 s, 60 s, 120 s … capped at an hour."""
    return timedelta(seconds=min(RETRY_BASE_SECONDS * 2 ** (attempts - 1), RETRY_MAX_SECONDS))


async def send(settings: Settings, email: EmailOutbox) -> None:
    if not settings.email_via_smtp:
        # The embedded default has no mail server: the log is the mailbox (so a magic link works locally).
        log.info(MAILBOX_EVENT, to=email.to_address, subject=email.subject, body=email.body)
        return
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = email.to_address
    message["Subject"] = email.subject
    message["Message-ID"] = f"<{email.id}@jushostit>"
    message.set_content(email.body)
    await aiosmtplib.send(
        message,
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        start_tls=settings.smtp_starttls,
        use_tls=settings.smtp_use_tls,
        timeout=30,
    )


async def deliver(session: AsyncSession, settings: Settings, email_id: uuid.UUID, now: datetime) -> EmailStatus | None:
    """Try one due email; returns its new status, or None when it was not due or someone else has it."""
    email = await OutboxRepository(session).lock_if_due(email_id, now)
    if email is None:
        return None
    email.attempts += 1
    try:
        await send(settings, email)
    except Exception as error:  # noqa: BLE001 - every failure counts as an attempt, so none retries forever
        email.last_error = f"{type(error).__name__}: {error}"[:500]
        if email.attempts >= settings.email_max_attempts:
            email.status = EmailStatus.failed
            log.error("email.failed", email_id=str(email.id), attempts=email.attempts, error=email.last_error)
        else:
            email.next_attempt_at = now + retry_delay(email.attempts)
            log.warning("email.retry_scheduled", email_id=str(email.id), attempts=email.attempts)
    else:
        email.status = EmailStatus.sent
        email.sent_at = now
        email.last_error = None
    return email.status


async def due_emails(session: AsyncSession, now: datetime) -> list[uuid.UUID]:
    return await OutboxRepository(session).due_ids(now)
