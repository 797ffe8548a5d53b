"""Per-request facts that audit entries and logs carry: request id, client IP and the acting principal."""

from __future__ import annotations

import contextvars
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    type: str  # user | api_key | system | anonymous
    id: uuid.UUID | None = None


SYSTEM = Actor("system")
ANONYMOUS = Actor("anonymous")

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
client_ip: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_ip", default=None)
actor: contextvars.ContextVar[Actor] = contextvars.ContextVar("actor", default=SYSTEM)
