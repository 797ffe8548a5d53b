"""A real SMTP server for tests: aiosmtpd's Controller on 127.0.0.1 and a free port, recording what it receives."""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: str | None

    @property
    def body(self) -> str:
        return self.message.get_content()


@dataclass
class Sink:
    """The aiosmtpd handler: keeps every message it accepted (the server runs in its own thread)."""

    messages: list[Received] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with self._lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message, login))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


class Authenticator:
    """Accepts exactly one username/password pair."""

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username.encode(), password.encode()
        self.attempts: list[str] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        self.attempts.append(auth_data.login.decode())
        ok = auth_data.login == self.username and auth_data.password == self.password
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@dataclass
class SmtpServer:
    host: str
    port: int
    sink: Sink
    controller: Controller

    def stop(self) -> None:
        self.controller.stop()


@contextlib.contextmanager
def smtp_server(
    port: int | None = None, *, sink: Sink | None = None, authenticator: Authenticator | None = None
) -> Iterator[SmtpServer]:
    sink = sink or Sink()
    kwargs: dict[str, Any] = {}
    if authenticator is not None:
        # AUTH over plain TCP is only for tests (REFERENCE §9).
        kwargs.update(auth_require_tls=False, authenticator=authenticator, auth_required=True)
    controller = Controller(sink, hostname="127.0.0.1", port=port or free_port(), **kwargs)
    controller.start()
    server = SmtpServer("127.0.0.1", controller.port, sink, controller)
    try:
        yield server
    finally:
        with contextlib.suppress(AssertionError):  # already stopped by the test
            controller.stop()
