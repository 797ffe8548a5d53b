"""The local runtime's browser pools, with real Chromium: a killed warm browser is replaced, a profile left by a
crash is reaped with the browser still running on it, a stopped pool has no browser, and nothing is left after
shutdown."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from jushostit.catalog.loader import load_templates
from jushostit.catalog.spec import TemplateSpec
from jushostit.runtime.local.browsers import BrowserPools, PoolWanted

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None,
                                reason="Debian's chromium is not installed (.ci/run installs it)")


def chromium_command() -> tuple[str, ...]:
    template = next(t for t in load_templates() if t.code == "chromium")
    assert isinstance(template, TemplateSpec) and template.process is not None
    return tuple(template.process.command)


def running_on(profile: Path) -> list[int]:
    mark = f"--user-data-dir={profile}".encode()
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.startswith(mark) for a in arguments):
            found.append(pid)
    return found


async def test_a_killed_warm_browser_is_replaced_and_shutdown_leaves_nothing(tmp_path: Path) -> None:
    pools = BrowserPools(tmp_path)
    pool_id = uuid.uuid4()
    pools.want(pool_id, PoolWanted(chromium_command(), 2, 4))
    try:
        assert await pools.top_up(pool_id) == 2
        first, second = pools.browsers_of(pool_id)
        os.killpg(first.process.pid, signal.SIGKILL)
        await first.process.wait()
        await pools.maintain()
        assert pools.warm_count(pool_id) == 2 and first not in pools.browsers_of(pool_id)
        assert second in pools.browsers_of(pool_id) and not first.profile.exists()
    finally:
        await pools.shutdown()
    assert running_on(tmp_path) == [] and list((tmp_path / str(pool_id)).iterdir()) == []


async def test_a_profile_left_by_a_crash_is_reaped_with_the_browser_running_on_it(tmp_path: Path) -> None:
    pools = BrowserPools(tmp_path)
    pool_id = uuid.uuid4()
    orphan = tmp_path / str(pool_id) / "left-by-a-crash"
    orphan.mkdir(parents=True)
    stray = subprocess.Popen([*chromium_command(), f"--user-data-dir={orphan}", "--remote-debugging-port=0",
                              "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        async def started() -> bool:
            return (orphan / "DevToolsActivePort").exists()

        for _ in range(2000):  # polling for the stray to be up, bounded
            if await started():
                break
            await asyncio.sleep(0.01)
        assert running_on(orphan)
        assert await pools.reap_orphans(pool_id) == 1
        assert running_on(orphan) == [] and not orphan.exists()
    finally:
        if stray.poll() is None:
            os.killpg(stray.pid, signal.SIGKILL)
        stray.wait()
