"""Browser pools on the local runtime: real headless Chromium processes (the pool template's `process` command),
each with a fresh profile directory and its DevTools port on loopback, kept warm for browser sessions.

- A pool instance that should run keeps `warm_size` idle browsers; a stopped one (suspended, expired) has none,
  and every browser it lent out is killed too: the sessions on them end (the session reaper names the reason).
- A browser is lent to one session and never to another: when the session ends it is killed and its profile
  deleted (no cookies, storage or tabs carried over), and the pool is topped up.
- Nothing outlives `serve`: `shutdown` kills every browser; a profile directory no live browser of ours owns (a
  crash) is reaped, with any process still running on it, at the pool's next apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
import structlog

from jushostit.runtime.protocol import (
    AccountState,
    Beside,
    DesiredInstance,
    Observed,
    ObservedInstance,
    RuntimeDriver,
)

log = structlog.get_logger(__name__)

LOOPBACK = "127.0.0.1"
PORT_FILE = "DevToolsActivePort"  # Chromium writes its DevTools port and browser path here when it is ready
START_TIMEOUT_SECONDS = 20.0
NOT_A_POOL = "the pool template has no local command (process form)"


class BrowserStartFailed(RuntimeError):
    """A browser did not come up (the program is missing, or it exited or did not answer in time)."""


class PoolFull(RuntimeError):
    """The pool runs as many browsers as it may."""


@dataclass
class Browser:
    id: str
    pool_id: uuid.UUID
    process: asyncio.subprocess.Process
    profile: Path
    port: int
    path: str  # /devtools/browser/<id>: the browser-level DevTools WebSocket

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}{self.path}"


@dataclass(frozen=True)
class PoolWanted:
    command: tuple[str, ...]
    warm_size: int
    max_browsers: int


class BrowserPools:
    """Every pool of this process (one per `serve`: the browsers are its children)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._wanted: dict[uuid.UUID, PoolWanted] = {}
        self._warm: dict[uuid.UUID, list[Browser]] = {}
        self._lent: dict[str, Browser] = {}
        self._starting: dict[uuid.UUID, int] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self.drained: set[str] = set()  # browsers killed because their pool stopped (their sessions: `suspended`)
        self.hits = 0
        self.misses = 0

    # --- the reconciler's side ----------------------------------------------------------------------------------

    async def apply_pool(self, instance: DesiredInstance) -> ObservedInstance:
        template = instance.template
        if instance.problem or template is None or template.pool is None or template.process is None:
            await self.drain(instance.id)
            return ObservedInstance("failed", instance.problem or NOT_A_POOL) if instance.run else ObservedInstance("stopped")
        if not instance.run:
            await self.drain(instance.id)
            return ObservedInstance("stopped")
        self.want(instance.id, PoolWanted(tuple(template.process.command), template.pool.warm_size,
                                          template.pool.max_browsers))
        await self.reap_orphans(instance.id)
        try:
            await self.top_up(instance.id)
        except BrowserStartFailed as error:
            return ObservedInstance("failed", "the browser could not be started", error=str(error)[:2000])
        return ObservedInstance("throttled" if instance.throttled else "running")

    def want(self, pool_id: uuid.UUID, wanted: PoolWanted) -> None:
        """The pool runs: browsers of this command, this many warm, at most so many."""
        self._wanted[pool_id] = wanted

    def wanted(self, pool_id: uuid.UUID) -> PoolWanted | None:
        return self._wanted.get(pool_id)

    async def drain(self, pool_id: uuid.UUID) -> int:
        """No browser of the pool left, warm or lent: what a stopped pool has. Returns how many were killed."""
        self._wanted.pop(pool_id, None)
        doomed = self._warm.pop(pool_id, []) + [b for b in self._lent.values() if b.pool_id == pool_id]
        for browser in doomed:
            if self._lent.pop(browser.id, None) is not None:
                self.drained.add(browser.id)
            await _kill(browser)
        return len(doomed)

    async def top_up(self, pool_id: uuid.UUID) -> int:
        """Start browsers until the pool has its warm size (dead warm ones replaced), within its maximum. The
        starts are counted against the maximum while they run, outside the pool's lock: a session taking a
        browser meanwhile is not held up."""
        wanted = self._wanted.get(pool_id)
        if wanted is None:
            return 0
        async with self._lock(pool_id):
            warm = self._warm.setdefault(pool_id, [])
            dead = [b for b in warm if not b.alive]
            for browser in dead:
                warm.remove(browser)
            missing = min(wanted.warm_size - len(warm) - self._starting.get(pool_id, 0),
                          wanted.max_browsers - self._count(pool_id))
            if missing > 0:
                self._starting[pool_id] = self._starting.get(pool_id, 0) + missing
        for browser in dead:
            await _kill(browser)
        if missing <= 0:
            return 0
        try:
            started = await asyncio.gather(*(self._start(pool_id, wanted) for _ in range(missing)),
                                           return_exceptions=True)
        finally:
            self._starting[pool_id] -= missing
        for result in started:
            if isinstance(result, Browser):
                if self._wanted.get(pool_id) is None:  # drained meanwhile
                    await _kill(result)
                else:
                    self._warm.setdefault(pool_id, []).append(result)
        failures = [b for b in started if isinstance(b, BaseException)]
        if failures:
            raise BrowserStartFailed(str(failures[0]))
        return len(started)

    async def maintain(self) -> None:
        """Replace dead warm browsers of every wanted pool (a killed browser is replaced)."""
        for pool_id in list(self._wanted):
            with contextlib.suppress(BrowserStartFailed):
                await self.top_up(pool_id)

    async def reap_orphans(self, pool_id: uuid.UUID) -> int:
        """Profile directories of the pool that no browser of ours owns (left by a crash): any process still
        running on one is killed, and the directory removed."""
        directory = self.root / str(pool_id)
        if not directory.is_dir():
            return 0
        owned = {b.profile for b in self._warm.get(pool_id, [])} | {b.profile for b in self._lent.values()}
        orphans = [p for p in directory.iterdir() if p.is_dir() and p not in owned]
        if not orphans:
            return 0
        marks = [f"--user-data-dir={p}" for p in orphans]

        def find() -> list[psutil.Process]:
            found = []
            for process in psutil.process_iter(["cmdline"]):
                if any(mark in (process.info["cmdline"] or []) for mark in marks):
                    found.append(process)
            return found

        strays = await asyncio.to_thread(find)
        for process in strays:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        await asyncio.to_thread(psutil.wait_procs, strays, timeout=5)
        for profile in orphans:
            await asyncio.to_thread(shutil.rmtree, profile, True)
        log.warning("browsers.orphans_reaped", pool_id=str(pool_id), profiles=len(orphans), processes=len(strays))
        return len(orphans)

    # --- the sessions' side --------------------------------------------------------------------------------------

    async def take(self, pool_id: uuid.UUID) -> tuple[Browser, bool]:
        """A browser for one session, and whether it was warm: a warm one at once, else one started now. Raises
        PoolFull at the pool's maximum, BrowserStartFailed when it cannot start one, KeyError for a pool that
        does not run."""
        wanted = self._wanted[pool_id]
        async with self._lock(pool_id):
            warm = self._warm.setdefault(pool_id, [])
            while warm:
                browser = warm.pop(0)
                if browser.alive:
                    self._lent[browser.id] = browser
                    self.hits += 1
                    return browser, True
                await _kill(browser)
            if self._count(pool_id) >= wanted.max_browsers:
                raise PoolFull(f"the pool runs its maximum of {wanted.max_browsers} browsers")
            self._starting[pool_id] = self._starting.get(pool_id, 0) + 1
        try:
            browser = await self._start(pool_id, wanted)
        finally:
            self._starting[pool_id] -= 1
        self._lent[browser.id] = browser
        self.misses += 1
        return browser, False

    async def discard(self, browser_id: str) -> None:
        """The session is over: its browser is killed and its profile deleted."""
        browser = self._lent.pop(browser_id, None)
        if browser is not None:
            await _kill(browser)

    def warm_count(self, pool_id: uuid.UUID) -> int:
        return sum(1 for b in self._warm.get(pool_id, []) if b.alive)

    def lent(self, browser_id: str) -> Browser | None:
        return self._lent.get(browser_id)

    def browsers_of(self, pool_id: uuid.UUID) -> Sequence[Browser]:
        return [*self._warm.get(pool_id, []), *(b for b in self._lent.values() if b.pool_id == pool_id)]

    async def shutdown(self) -> None:
        for pool_id in {*self._warm, *self._wanted, *(b.pool_id for b in self._lent.values())}:
            await self.drain(pool_id)

    # --- one browser ---------------------------------------------------------------------------------------------

    def _lock(self, pool_id: uuid.UUID) -> asyncio.Lock:
        return self._locks.setdefault(pool_id, asyncio.Lock())

    def _count(self, pool_id: uuid.UUID) -> int:
        lent = sum(1 for b in self._lent.values() if b.pool_id == pool_id)
        return len(self._warm.get(pool_id, [])) + lent + self._starting.get(pool_id, 0)

    async def _start(self, pool_id: uuid.UUID, wanted: PoolWanted) -> Browser:
        browser_id = uuid.uuid4().hex
        profile = self.root / str(pool_id) / browser_id
        profile.mkdir(parents=True)
        log_file = profile.parent / f"{browser_id}.log"
        try:
            with log_file.open("wb") as output:
                process = await asyncio.create_subprocess_exec(
                    *wanted.command, f"--user-data-dir={profile}", f"--remote-debugging-address={LOOPBACK}",
                    "--remote-debugging-port=0", "about:blank",
                    stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output, start_new_session=True,
                )
        except OSError as error:
            shutil.rmtree(profile, ignore_errors=True)
            raise BrowserStartFailed(f"{wanted.command[0]!r} could not be started: {error}") from error
        browser = Browser(browser_id, pool_id, process, profile, 0, "")
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        port_file = profile / PORT_FILE
        while True:
            text = port_file.read_text() if port_file.exists() else ""
            lines = text.split()
            if len(lines) == 2:
                return replace(browser, port=int(lines[0]), path=lines[1])
            if process.returncode is not None or time.monotonic() > deadline:
                await _kill(browser)
                why = "exited" if process.returncode is not None else "did not open its DevTools port in time"
                raise BrowserStartFailed(f"the browser {why} (log: {log_file})")
            await asyncio.sleep(0.01)


async def _kill(browser: Browser) -> None:
    """The browser's whole process group (renderers, GPU and utility processes), then its profile."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(browser.process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await browser.process.wait()
    await asyncio.to_thread(shutil.rmtree, browser.profile, True)
    (browser.profile.parent / f"{browser.id}.log").unlink(missing_ok=True)


class WithPools(Beside):
    """A runtime with the browser pools beside it: session pool instances go to the pools, the rest to the
    runtime."""

    def __init__(self, runtime: RuntimeDriver, pools: BrowserPools) -> None:
        super().__init__(runtime)
        self.pools = pools

    @staticmethod
    def _is_pool(instance: DesiredInstance) -> bool:
        return instance.template is not None and instance.template.kind == "session_pool"

    async def apply(self, desired: AccountState) -> Observed:
        pools = [i for i in desired.instances if self._is_pool(i)]
        observed = await self.runtime.apply(replace(desired, instances=tuple(
            i for i in desired.instances if not self._is_pool(i))))
        for instance in pools:
            observed.instances[instance.id] = await self.pools.apply_pool(instance)
        return observed

    async def remove_instance(self, account_id: uuid.UUID, instance_id: uuid.UUID) -> None:
        await self.pools.drain(instance_id)
        await asyncio.to_thread(shutil.rmtree, self.pools.root / str(instance_id), True)
        await self.runtime.remove_instance(account_id, instance_id)
