"""The `local` runtime: instances whose template has a `process` form run as supervised child processes on
loopback ports, one directory per instance under the data dir.

The state on disk is the truth (a `run.json` per running instance naming its pid, the pid's start time and
its port), so any process — a restarted `serve`, a second worker — observes and converges from what it finds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import structlog

from jushostit.catalog.availability import NOT_RUNNABLE, unavailable_reason
from jushostit.runtime.local.traffic import TrafficMeter
from jushostit.runtime.protocol import AccountState, DesiredInstance, Observed, ObservedInstance

log = structlog.get_logger(__name__)

LOCAL = "local"  # this runtime's name (JUSHOSTIT_RUNTIME)
LOOPBACK = "127.0.0.1"
HEALTH_TIMEOUT_SECONDS = 2.0
STOP_TIMEOUT_SECONDS = 5.0
THROTTLED_NICENESS = 15


@dataclass(frozen=True)
class RunRecord:
    pid: int
    started: float  # the process's create_time, so a reused pid is never mistaken for ours
    port: int
    throttled: bool

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            return bool(abs(process.create_time() - self.started) < 0.01 and process.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False


def read_run_record(directory: Path) -> RunRecord | None:
    """The record of an instance's running process, if it has one (it is removed when the process stops)."""
    try:
        return RunRecord(**json.loads((directory / "run.json").read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class LocalDriver:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._children: dict[uuid.UUID, asyncio.subprocess.Process] = {}
        self._managed: set[Path] = set()  # instance dirs whose process this driver started or adopted
        self.traffic = TrafficMeter()  # what the router relays to and from each instance (metering reads it)

    # --- layout -------------------------------------------------------------------------------------------
    def account_dir(self, account_id: uuid.UUID) -> Path:
        return self.root / str(account_id)

    def instance_dir(self, account_id: uuid.UUID, instance_id: uuid.UUID) -> Path:
        return self.account_dir(account_id) / str(instance_id)

    def _find_instance_dir(self, instance_id: uuid.UUID) -> Path | None:
        matches = list(self.root.glob(f"*/{instance_id}"))
        return matches[0] if matches else None

    _read_run = staticmethod(read_run_record)

    def port_of(self, account_id: uuid.UUID, instance_id: uuid.UUID) -> int | None:
        """The port a running instance listens on (for the router), or None."""
        record = self._read_run(self.instance_dir(account_id, instance_id))
        return record.port if record and record.alive() else None

    # --- the protocol ---------------------------------------------------------------------------------------
    async def apply(self, desired: AccountState) -> Observed:
        observed = Observed()
        wanted = {i.id for i in desired.instances}
        for instance in desired.instances:
            try:  # one broken instance must not keep its siblings from converging
                observed.instances[instance.id], writes = await self._apply_instance(desired.account_id, instance)
            except Exception as error:  # noqa: BLE001 - reported on that instance; the reconciler retries
                observed.instances[instance.id] = ObservedInstance(
                    "failed", "the runtime could not apply it", error=f"{type(error).__name__}: {error}"
                )
                writes = 0
            observed.writes += writes
        account_dir = self.account_dir(desired.account_id)
        if account_dir.exists():
            for directory in account_dir.iterdir():  # not desired: stopped, data kept (see remove_instance)
                if directory.is_dir() and uuid.UUID(directory.name) not in wanted and self._running(directory):
                    await self._stop(directory)
                    observed.writes += 1
        return observed

    async def observe(self, account_id: uuid.UUID) -> Observed:
        observed = Observed()
        account_dir = self.account_dir(account_id)
        if account_dir.exists():
            for directory in account_dir.iterdir():
                record = self._read_run(directory)
                if record is not None and record.alive():
                    observed.instances[uuid.UUID(directory.name)] = ObservedInstance(
                        "throttled" if record.throttled else "running"
                    )
                else:
                    observed.instances[uuid.UUID(directory.name)] = ObservedInstance("stopped")
        return observed

    async def remove_instance(self, account_id: uuid.UUID, instance_id: uuid.UUID) -> None:
        directory = self.instance_dir(account_id, instance_id)
        if directory.exists():
            await self._stop(directory)
            await self._kill_strays(directory)
            await asyncio.to_thread(shutil.rmtree, directory)
        account_dir = self.account_dir(account_id)
        if account_dir.exists() and not any(account_dir.iterdir()):
            account_dir.rmdir()

    async def destroy(self, account_id: uuid.UUID) -> None:
        account_dir = self.account_dir(account_id)
        if account_dir.exists():
            for directory in list(account_dir.iterdir()):
                if directory.is_dir():
                    await self.remove_instance(account_id, uuid.UUID(directory.name))

    async def logs(self, instance_id: uuid.UUID, tail: int) -> list[str]:
        directory = self._find_instance_dir(instance_id)
        if directory is None or not (directory / "log.txt").exists():
            return []
        with (directory / "log.txt").open(errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=tail)]

    async def restart(self, instance_id: uuid.UUID) -> None:
        """Stop the process; the next apply starts it again (restart is a reconcile, not a special path)."""
        directory = self._find_instance_dir(instance_id)
        if directory is not None:
            await self._stop(directory)

    async def shutdown(self) -> None:
        """Stop every instance this process ran: those it started and those it adopted from a previous run
        (a crash restart), so nothing of ours outlives serve. Data stays; the next start brings them back."""
        for directory in list(self._managed):
            await self._stop(directory)

    # --- one instance ---------------------------------------------------------------------------------------
    def _running(self, directory: Path) -> bool:
        record = self._read_run(directory)
        return record is not None and record.alive()

    async def _apply_instance(self, account_id: uuid.UUID, instance: DesiredInstance) -> tuple[ObservedInstance, int]:
        directory = self.instance_dir(account_id, instance.id)
        record = self._read_run(directory)
        running = record is not None and record.alive()
        if running:
            self._managed.add(directory)  # adopted from a previous run, or ours: stopped when serve stops
        if not instance.run:  # enforcement needs nothing but the directory: it works on a broken instance too
            writes = 0
            if running:
                await self._stop(directory)
                writes += 1
            if directory.exists():
                writes += await self._kill_strays(directory)
            return ObservedInstance("stopped", instance.problem), writes
        # A template this runtime cannot run (no process form, its program not installed): failed, not retried.
        if instance.template is None or instance.template.process is None or unavailable_reason(instance.template, LOCAL):
            reason = instance.problem or (unavailable_reason(instance.template, LOCAL) if instance.template else None)
            return ObservedInstance("failed", reason or NOT_RUNNABLE), 0
        process = instance.template.process
        writes = self._ensure_data(directory, instance)
        if running and record is not None and record.throttled != instance.throttled:
            self._renice(record.pid, instance.throttled)
            record = RunRecord(record.pid, record.started, record.port, instance.throttled)
            (directory / "run.json").write_text(json.dumps(record.__dict__))
            writes += 1
        if not running:
            writes += await self._kill_strays(directory)
            try:
                env = (*instance.plain_env, *instance.secret_env.values())
            except ValueError as error:  # a generated value is missing or unreadable: not until facts change
                return ObservedInstance("failed", "its configuration is incomplete", error=str(error)), writes
            record = await self._start(directory, instance, env)
            writes += 1
        assert record is not None
        # One quick probe: a starting instance is looked at again by a follow-up reconcile, never awaited here.
        if await self._healthy(record.port, process.health_path):
            return ObservedInstance("throttled" if instance.throttled else "running"), writes
        if not record.alive():
            return ObservedInstance("failed", "process exited; see the instance logs"), writes
        return ObservedInstance("provisioning", "waiting for the health check"), writes

    def _ensure_data(self, directory: Path, instance: DesiredInstance) -> int:
        data = directory / "data"
        if data.exists():
            return 0
        data.mkdir(parents=True)
        assert instance.template is not None and instance.template.process is not None
        for relative, content in instance.template.process.seed_files.items():
            target = (data / relative).resolve()
            if data.resolve() not in target.parents:
                raise ValueError(f"seed file {relative!r} escapes the data directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content.replace("{name}", instance.name).replace("{url}", instance.url))
        return 1

    async def _start(self, directory: Path, instance: DesiredInstance, env: tuple[tuple[str, str], ...]) -> RunRecord:
        port = free_port()
        child = await self._spawn(directory, instance, port, env)
        if instance.throttled:
            self._renice(child.pid, True)
        try:
            started = psutil.Process(child.pid).create_time()
        except psutil.NoSuchProcess:  # it exited (and was reaped) at once: a record that is never alive
            started = 0.0
        record = RunRecord(child.pid, started, port, instance.throttled)
        (directory / "run.json").write_text(json.dumps(record.__dict__))
        self._children[instance.id] = child
        self._managed.add(directory)
        log.info("local.started", instance_id=str(instance.id), pid=child.pid, port=port)
        return record

    async def _spawn(
        self, directory: Path, instance: DesiredInstance, port: int, env: tuple[tuple[str, str], ...]
    ) -> asyncio.subprocess.Process:
        """Start the process, not yet recorded in run.json (a crash right after leaves a stray: see _kill_strays)."""
        assert instance.template is not None and instance.template.process is not None
        substitutions = {"python": sys.executable, "port": str(port), "data_dir": str(directory / "data"), "host": LOOPBACK}
        command = [part.format(**substitutions) for part in instance.template.process.command]
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(directory / "data"),
                       "PORT": str(port), **dict(env)}
        with (directory / "log.txt").open("ab") as log_file:
            return await asyncio.create_subprocess_exec(
                *command, cwd=directory / "data", stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file, stderr=log_file, start_new_session=True, env=environment,
            )

    async def _stop(self, directory: Path) -> None:
        self._managed.discard(directory)
        record = self._read_run(directory)
        (directory / "run.json").unlink(missing_ok=True)
        instance_id = uuid.UUID(directory.name)
        child = self._children.pop(instance_id, None)
        if record is None or not record.alive():
            if child is not None:
                await child.wait()
            return
        try:
            os.killpg(record.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while record.alive() and time.monotonic() < deadline:
            if child is not None:
                try:
                    await asyncio.wait_for(child.wait(), timeout=0.1)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0.05)  # not our child: poll until it is gone
        if record.alive():
            with contextlib.suppress(ProcessLookupError):  # it ended between the check and the kill: as asked
                os.killpg(record.pid, signal.SIGKILL)
        if child is not None:
            await child.wait()
        log.info("local.stopped", instance_id=str(instance_id), pid=record.pid)

    @staticmethod
    async def _kill_strays(directory: Path) -> int:
        """Processes running in the instance's data dir that no run.json names: left by a crash between
        starting a process and recording it. Without this, a retry would start a second copy."""
        data = str((directory / "data").resolve())
        record = LocalDriver._read_run(directory)

        def find() -> list[psutil.Process]:
            return [
                process
                for process in psutil.process_iter(["pid", "cwd"])
                if process.info["cwd"] == data and not (record and record.pid == process.info["pid"])
            ]

        strays = await asyncio.to_thread(find)
        for process in strays:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        await asyncio.to_thread(psutil.wait_procs, strays, timeout=STOP_TIMEOUT_SECONDS)
        if strays:
            log.warning("local.killed_strays", directory=str(directory), pids=[p.pid for p in strays])
        return len(strays)

    @staticmethod
    def _renice(pid: int, throttled: bool) -> None:
        try:
            psutil.Process(pid).nice(THROTTLED_NICENESS if throttled else 0)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass

    @staticmethod
    async def _healthy(port: int, path: str) -> bool:
        async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT_SECONDS) as client:
            try:
                return (await client.get(f"http://{LOOPBACK}:{port}{path}")).status_code < 500
            except httpx.TransportError:
                return False
