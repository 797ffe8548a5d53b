"""REFERENCE §11 crash safety: kill -9 a reconciling process in the middle of an apply — after it spawned the
instance process, before it recorded it — then reconcile again: it converges with no duplicate effects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from tests.live import Live, eventually, processes_in

CHILD = Path(__file__).with_name("crash_child.py")


def child_env(live: Live, database_url: str) -> dict[str, str]:
    settings = live.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUSHOSTIT_") and k != "DATABASE_URL"}
    env.update(
        DATABASE_URL=database_url,
        JUSHOSTIT_DATA_DIR=str(settings.data_dir),
        JUSHOSTIT_SECRET_KEYS=settings.secret_keys.get_secret_value(),  # type: ignore[union-attr]
        JUSHOSTIT_JWT_SECRET=settings.jwt_secret.get_secret_value(),  # type: ignore[union-attr]
        JUSHOSTIT_PORT=str(settings.port),
        JUSHOSTIT_LOG_LEVEL="WARNING",
        JUSHOSTIT_DB_POOL_SIZE="3",
    )
    return env


async def test_killed_mid_apply_then_restarted_converges_without_duplicates(live: Live, database_url: str,
                                                                            tmp_path: Path) -> None:
    owner = await live.signup("Crash Co")
    await live.checkout(owner, "free")
    instance = await live.ordered(owner, "sturdy")
    ready = tmp_path / "spawned"
    log = (tmp_path / "child.log").open("wb")
    child = subprocess.Popen([sys.executable, str(CHILD), owner.account_id, str(ready)],
                             env=child_env(live, database_url), stdout=log, stderr=log)
    try:
        async def spawned() -> bool:
            assert child.poll() is None, f"the child exited early:\n{(tmp_path / 'child.log').read_text()}"
            return ready.exists()

        await eventually(spawned, "the child to spawn the instance process", timeout=30)
        stray = psutil.Process(int(ready.read_text()))
        child.send_signal(signal.SIGKILL)  # kill -9 in the middle of the apply
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.close()

    # What the crash left: a running instance process nobody recorded, and no effect written back.
    assert stray.is_running() and stray.status() != psutil.STATUS_ZOMBIE
    assert [p.pid for p in processes_in(live.data_dir(instance))] == [stray.pid]
    assert not (live.instance_dir(instance) / "run.json").exists()
    row = await live.row(instance["id"])
    assert row.observed_status == "provisioning" and row.last_reconciled_at is None
    assert await live.emails_of(owner, "instance_ready") == []

    # Restart: the next reconcile kills the stray and starts exactly one process.
    observed = await live.reconcile(owner.account_id)
    assert observed is not None and observed.writes == 2  # the stray killed, one process started (data kept)
    await live.converge(owner.account_id)
    await eventually(lambda: _gone(stray), "the stray to be gone")
    running = processes_in(live.data_dir(instance))
    assert len(running) == 1 and running[0].pid != stray.pid
    record = json.loads((live.instance_dir(instance) / "run.json").read_text())
    assert record["pid"] == running[0].pid
    body = await live.instance(owner, instance["id"])
    assert body["status"] == "running"
    page = await live.page(instance["slug"])
    assert page.status_code == 200 and "<h1>sturdy</h1>" in page.text

    # The reconcile queued by the order still runs on a real worker: nothing more happens.
    await live.work()
    assert [p.pid for p in processes_in(live.data_dir(instance))] == [running[0].pid]
    assert len(await live.emails_of(owner, "instance_ready")) == 1
    assert [c.after["status"] for c in await live.audit("instance.status_changed", instance["id"])] == ["running"]
    assert sorted(p.name for p in live.data_dir(instance).iterdir()) == ["index.html"]


async def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
