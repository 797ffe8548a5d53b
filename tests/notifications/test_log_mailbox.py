"""With no SMTP server (the embedded default) the log is the mailbox: a magic link must be usable from it,
while everything else in the log stays redacted."""

from __future__ import annotations

import json

from jushostit.kit.logging import configure_logging
from jushostit.models import EmailOutbox
from jushostit.notifications.service import send


async def test_a_magic_link_can_be_read_from_the_log(settings, capfd) -> None:
    configure_logging("INFO")
    token = "jhm_" + "A1b2C3d4" * 5
    email = EmailOutbox(to_address="me@example.com", template="magic_link", subject="Your sign-in link",
                        body=f"use http://testserver/auth/magic-link?token={token} once")
    assert not settings.email_via_smtp
    await send(settings, email)
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    [delivered] = [line for line in lines if line["event"] == "email.delivered_to_log"]
    assert token in delivered["body"]
    assert delivered["to"] == "me@example.com"
