"""Background jobs on procrastinate (PostgreSQL), and the per-request buffer that defers them after commit.

Jobs take ids, never objects, and have dotted names. A defer that is lost (a crash between commit and
defer) must always be healed by a periodic job: design every job that way.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import procrastinate
import structlog
from procrastinate.exceptions import AlreadyEnqueued, ConnectorException, UniqueViolation
from procrastinate.jobs import Status
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

log = structlog.get_logger(__name__)

# The modules that register tasks on `app` are named by the caller (jushostit.bootstrap): kit knows no domain.
app = procrastinate.App(connector=procrastinate.PsycopgConnector())

# Workers heartbeat every HEARTBEAT_SECONDS; one silent for STALLED_AFTER_SECONDS is dead (a kill -9, a lost
# machine) and its running jobs are handed back to the queue (DESIGN §8).
HEARTBEAT_SECONDS = 2.0
STALLED_AFTER_SECONDS = 10.0
RECOVERY_INTERVAL_SECONDS = 5.0


@contextlib.asynccontextmanager
async def connected(
    conninfo: str, *, max_size: int = 4, task_modules: Sequence[str] = ()
) -> AsyncIterator[procrastinate.App]:
    """The job app, connected to `conninfo` for the duration of the block, with `task_modules` imported."""
    # A task module that fails to import would make every defer of its tasks fail: fail at start-up instead.
    for module in task_modules:
        importlib.import_module(module)
    connector = procrastinate.PsycopgConnector(conninfo=conninfo, min_size=1, max_size=max_size)
    with app.replace_connector(connector):
        async with app.open_async():
            yield app


def interval_cron(seconds: int) -> str:
    """A cron expression firing every `seconds` (procrastinate takes a sixth, seconds, field)."""
    if seconds < 60:
        return f"* * * * * */{seconds}"
    return f"*/{max(1, seconds // 60)} * * * *"


@dataclass(frozen=True)
class PendingJob:
    task: str
    kwargs: dict[str, Any]
    queueing_lock: str | None = None
    lock: str | None = None
    priority: int = 0
    schedule_in_seconds: float | None = None
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


async def recover_stalled() -> int:
    """Hand the running jobs of dead workers back to the queue, then forget those workers. Every job here is
    idempotent, so running one again is safe. A job whose twin is already queued (same queueing lock) is
    dropped instead: the twin does its work. Returns how many jobs were recovered."""
    stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_AFTER_SECONDS)
    recovered = 0
    for job in stalled:
        assert job.id is not None
        try:
            await app.job_manager.retry_job(job)
            log.warning("job.stalled_retried", task=job.task_name, job_id=job.id, worker_id=job.worker_id)
        except UniqueViolation:
            await app.job_manager.finish_job_by_id_async(job.id, Status.ABORTED, delete_job=True)
            log.warning("job.stalled_dropped", task=job.task_name, job_id=job.id, reason="a twin is queued")
        except ConnectorException:
            continue  # another worker recovered it first
        recovered += 1
    await app.job_manager.prune_stalled_workers(STALLED_AFTER_SECONDS)
    return recovered


async def counts_by_task_and_status(session: AsyncSession) -> list[tuple[str, str, int]]:
    """How many jobs each task has in each status (finished ones are deleted, so this stays small)."""
    rows = await session.execute(
        text("SELECT task_name, status::text, count(*) FROM procrastinate_jobs GROUP BY 1, 2 ORDER BY 1, 2")
    )
    return [(task, status, int(count)) for task, status, count in rows]


async def oldest_ages(session: AsyncSession) -> list[tuple[str, str, float]]:
    """Per task, the age of the oldest job waiting since it was due (todo) and running since it started (doing)."""
    rows = await session.execute(
        text(
            "SELECT j.task_name, j.status::text, extract(epoch FROM now() - min(CASE WHEN j.status = 'doing'"
            "  THEN e.at ELSE greatest(j.scheduled_at, e.at) END))"
            " FROM procrastinate_jobs j"
            " LEFT JOIN LATERAL (SELECT max(at) AS at FROM procrastinate_events WHERE job_id = j.id"
            "  AND type IN ('deferred', 'started', 'deferred_for_retry', 'retried')) e ON true"
            " WHERE j.status = 'doing' OR (j.status = 'todo' AND coalesce(j.scheduled_at, now()) <= now())"
            " GROUP BY 1, 2 ORDER BY 1, 2"
        )
    )
    return [(task, status, max(0.0, float(age or 0))) for task, status, age in rows]


async def stalled_count(session: AsyncSession) -> int:
    """Running jobs whose worker is gone or silent (recover_stalled hands them back)."""
    count = await session.scalar(
        text(
            "SELECT count(*) FROM procrastinate_jobs j LEFT JOIN procrastinate_workers w ON w.id = j.worker_id"
            " WHERE j.status = 'doing' AND (w.id IS NULL OR w.last_heartbeat < now() - make_interval(secs => :after))"
        ),
        {"after": STALLED_AFTER_SECONDS},
    )
    return int(count or 0)
