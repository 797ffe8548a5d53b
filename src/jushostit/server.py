"""`jushostit serve` and `jushostit worker`: one asyncio loop, our own signal handling.

uvicorn's own handlers re-raise SIGTERM after shutdown, which kills the process before atexit runs and
orphans the embedded PostgreSQL (REFERENCE §4); so we catch SIGINT/SIGTERM ourselves and exit through Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
from collections.abc import Iterator

import structlog
import uvicorn

from jushostit.app import create_app
from jushostit.bootstrap import open_container
from jushostit.config import Settings
from jushostit.kit import jobs
from jushostit.metering.tasks import schedule_collectors
from jushostit.reconcile.tasks import schedule_resync
from jushostit.runtime.registry import KUBERNETES, browser_pools
from jushostit.runtime.registry import shutdown as runtime_shutdown
from jushostit.sessions.service import end_all, run_reaper

log = structlog.get_logger(__name__)

# Emails have a worker of their own, so a sign-in link never waits behind reconciles (each with its own
# concurrency); the other worker takes everything else.
EMAIL_QUEUES = ["email"]
MAIN_QUEUES = ["reconcile", "default"]
SHUTDOWN_GRACE_SECONDS = 10
# A job scheduled for a moment later (a reconcile waiting for the account's running pass) gets its NOTIFY when
# deferred, not when due: it is fetched at the next poll. procrastinate's default (5 s) would delay it that long.
FETCH_POLLING_SECONDS = 0.25


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals are ours (see module docstring)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def run_worker(settings: Settings) -> None:
    """The job workers as serve and `jushostit worker` run them (also used by the benchmark), with the
    recovery of jobs left running by dead workers."""
    schedule_resync(settings.resync_interval_seconds)
    schedule_collectors(settings)
    tasks = [
        asyncio.create_task(_worker(MAIN_QUEUES, settings.worker_concurrency, "main")),
        asyncio.create_task(_worker(EMAIL_QUEUES, settings.email_worker_concurrency, "email")),
        asyncio.create_task(_recover_stalled_jobs()),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a worker that ended on its own is a crash: raise it
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _worker(queues: list[str], concurrency: int, name: str) -> None:
    await jobs.app.run_worker_async(
        install_signal_handlers=False,
        name=name,
        concurrency=concurrency,
        queues=queues,
        shutdown_graceful_timeout=SHUTDOWN_GRACE_SECONDS,
        fetch_job_polling_interval=FETCH_POLLING_SECONDS,
        update_heartbeat_interval=jobs.HEARTBEAT_SECONDS,
        stalled_worker_timeout=jobs.STALLED_AFTER_SECONDS,
        # Finished jobs are deleted (failed ones stay, for admins): the table would grow without end.
        delete_jobs="successful",
    )


async def _recover_stalled_jobs() -> None:
    """At start and then periodically: jobs of workers that died (kill -9) go back to the queue."""
    while True:
        try:
            await jobs.recover_stalled()
        except Exception as error:  # noqa: BLE001 - the database may be away for a moment; try again
            log.warning("jobs.recovery_failed", error=type(error).__name__)
        await asyncio.sleep(jobs.RECOVERY_INTERVAL_SECONDS)


async def _until_stopped(stop: asyncio.Event, *tasks: asyncio.Task[None]) -> None:
    """Wait for a signal or for any task to end (a crash), then stop the rest."""
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({stopper, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()


async def serve(settings: Settings, *, announce: bool = True) -> int:
    """Run until SIGINT/SIGTERM (exit code 0) or until a task ends on its own, a crash (exit code 1)."""
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with open_container(settings) as container:
        app = create_app(settings, container=container)
        server = _Uvicorn(
            uvicorn.Config(
                app, host=settings.host, port=settings.port, log_config=None, access_log=False, lifespan="on",
                proxy_headers=False, server_header=False,
            )
        )
        server_task = asyncio.create_task(server.serve())
        worker_task = asyncio.create_task(run_worker(settings)) if settings.run_worker_in_serve else None
        announcing = asyncio.create_task(_announce(server, settings)) if announce else None
        # Browser sessions end on time in the process that runs their browsers (the local runtime's).
        reaping = asyncio.Event()
        reaper = (asyncio.create_task(run_reaper(container.database, browser_pools(settings), reaping))
                  if settings.runtime != KUBERNETES else None)
        await _until_stopped(stop, *[t for t in (server_task, worker_task) if t])
        crashed = not stop.is_set()
        reaping.set()
        if reaper:
            await reaper
            # The browsers go with serve: their sessions end now, not billed while the server is down.
            await end_all(container.database, browser_pools(settings), reason="crashed")
        server.should_exit = True
        if worker_task:
            worker_task.cancel()
        if announcing:
            announcing.cancel()  # still waiting when the server never started
        results = await asyncio.gather(server_task, *([worker_task] if worker_task else []), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("serve.task_failed", error_type=type(result).__name__, exc_info=result)
        # Instances of the local runtime live as long as serve; the reconciler brings them back on the next start.
        await runtime_shutdown(settings)
    log.info("serve.stopped", crashed=crashed)
    return 1 if crashed else 0


def first_admin_command(settings: Settings) -> str:
    """The exact command that creates a platform admin in this server's database, from any directory: the data
    dir made absolute (the default `./var` is relative to where serve was started) and quoted for a shell."""
    command = f"jushostit admin create --email you@example.com --data-dir {shlex.quote(str(settings.data_dir.resolve()))}"
    return command + ("  (with the same DATABASE_URL set)" if settings.database_url else "")


async def _announce(server: uvicorn.Server, settings: Settings) -> None:
    while not server.started:
        await asyncio.sleep(0.05)
    database = (
        "embedded PostgreSQL in " + str(settings.data_dir.resolve() / "pg") if not settings.database_url
        else "DATABASE_URL"
    )
    print(
        f"JusHostIt is listening on http://{settings.host}:{settings.port}  (database: {database})\n"
        f"  API docs: http://{settings.host}:{settings.port}/docs\n"
        f"  Create the first platform admin:  {first_admin_command(settings)}\n"
        f"  Stop with Ctrl-C.",
        flush=True,
    )


async def worker(settings: Settings) -> int:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with open_container(settings):
        task = asyncio.create_task(run_worker(settings))
        print("JusHostIt worker running; stop with Ctrl-C.", flush=True)
        await _until_stopped(stop, task)
        crashed = not stop.is_set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime_shutdown(settings)
    log.info("worker.stopped", crashed=crashed)
    return 1 if crashed else 0
