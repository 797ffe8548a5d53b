"""Background jobs on procrastinate (PostgreSQL), and the per-request buffer that defers them after commit.

Jobs take ids, never objects, and have dotted names. A defer that is lost (a crash between commit and
defer) must always be healed by a periodic job: design every job that way.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator
from datetime import datetime
from dataclasses import dataclass, field
from typing import Any

import procrastinate
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
import structlog
from procrastinate.exceptions import AlreadyEnqueued

log = structlog.get_logger(__name__)

TASK_MODULES = [
    "jushostit.notifications.tasks",
    "jushostit.auth.tasks",
    "jushostit.billing.tasks",
    "jushostit.reconcile.tasks",
    "jushostit.instances.tasks",
]

app = procrastinate.App(connector=procrastinate.PsycopgConnector(), import_paths=TASK_MODULES)


@contextlib.asynccontextmanager
async def connected(conninfo: str, *, max_size: int = 4) -> AsyncIterator[procrastinate.App]:
    """The job app, connected to `conninfo` for the duration of the block."""
    # A task module that fails to import would make every defer of its tasks fail: fail at start-up instead.
    app.perform_import_paths()
    connector = procrastinate.PsycopgConnector(conninfo=conninfo, min_size=1, max_size=max_size)
    with app.replace_connector(connector):
        async with app.open_async():
            yield app


@dataclass(frozen=True)
class PendingJob:
    task: str
    kwargs: dict[str, Any]
    queueing_lock: str | None = None
    lock: str | None = None
    priority: int = 0
    schedule_in_seconds: int | None = None
    schedule_at: datetime | None = None


@dataclass
class JobBuffer:
    jobs: list[PendingJob] = field(default_factory=list)


_buffer: contextvars.ContextVar[JobBuffer | None] = contextvars.ContextVar("job_buffer", default=None)


def open_buffer() -> contextvars.Token[JobBuffer | None]:
    return _buffer.set(JobBuffer())


def close_buffer(token: contextvars.Token[JobBuffer | None]) -> None:
    _buffer.reset(token)


def enqueue(
    task: str, *, queueing_lock: str | None = None, lock: str | None = None, priority: int = 0, **kwargs: Any
) -> None:
    """Defer `task` once the current unit of work commits (dropped if it rolls back)."""
    buffer = _buffer.get()
    if buffer is None:
        raise RuntimeError("enqueue() outside a unit of work")
    buffer.jobs.append(PendingJob(task, kwargs, queueing_lock, lock, priority))


async def flush() -> None:
    buffer = _buffer.get()
    if buffer is None:
        return
    pending, buffer.jobs = buffer.jobs, []
    for job in pending:
        await defer(job)


async def defer(job: PendingJob) -> None:
    try:
        await app.configure_task(
            job.task,
            queueing_lock=job.queueing_lock,
            lock=job.lock,
            priority=job.priority,
            schedule_in={"seconds": job.schedule_in_seconds} if job.schedule_in_seconds else None,
            schedule_at=job.schedule_at,
        ).defer_async(
            **job.kwargs
        )
    except AlreadyEnqueued:
        pass  # one is already queued and will see the committed fact
    except Exception as error:  # noqa: BLE001 - a lost defer is healed by the periodic sweeps
        log.warning("job.defer_failed", task=job.task, error=type(error).__name__)


async def counts_by_task_and_status(session: AsyncSession) -> list[tuple[str, str, int]]:
    """How many jobs each task has in each status (finished ones are deleted, so this stays small)."""
    rows = await session.execute(
        text("SELECT task_name, status::text, count(*) FROM procrastinate_jobs GROUP BY 1, 2 ORDER BY 1, 2")
    )
    return [(task, status, int(count)) for task, status, count in rows]
