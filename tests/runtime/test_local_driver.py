"""The local runtime driver against real child processes (static-site's `python -m http.server`)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from jushostit.catalog.loader import load_templates
from jushostit.runtime.local.driver import NOT_RUNNABLE, LocalDriver
from jushostit.runtime.protocol import AccountState, DesiredInstance, Observed
from tests.live import eventually

TEMPLATES = {t.code: t for t in load_templates()}
ACCOUNT = uuid.UUID(int=7)


class PlainEnv:
    def __init__(self, *pairs: tuple[str, str]) -> None:
        self.pairs = pairs
        self.reads = 0

    def values(self) -> tuple[tuple[str, str], ...]:
        self.reads += 1
        return self.pairs


def desired(instance_id: uuid.UUID, *, run: bool = True, throttled: bool = False, template: str = "static-site",
            name: str = "my-site", env: PlainEnv | None = None) -> DesiredInstance:
    return DesiredInstance(
        id=instance_id, slug=f"{name}-abc123", name=name, template_code=template, run=run, throttled=throttled,
        env=env or PlainEnv(("GREETING", "hello")), url=f"http://{name}-abc123.localhost:8000/",
        template=TEMPLATES[template],
    )


async def converged(driver: LocalDriver, state: AccountState) -> tuple[Observed, Observed]:
    """The first apply, and the one that found every instance settled (a starting process is looked at again,
    as the reconciler's follow-up does, never awaited inside apply)."""
    first = await driver.apply(state)
    last = first

    async def settled() -> bool:
        nonlocal last
        if any(seen.status == "provisioning" for seen in last.instances.values()):
            last = await driver.apply(state)
            return False
        return True

    await eventually(settled, "the instances to settle")
    return first, last


@pytest.fixture
async def driver(tmp_path: Path):
    local = LocalDriver(tmp_path / "instances")
    yield local
    await local.destroy(ACCOUNT)


def page(driver: LocalDriver, instance_id: uuid.UUID) -> httpx.Response:
    port = driver.port_of(ACCOUNT, instance_id)
    assert port is not None
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=5)


async def test_apply_runs_serves_stops_and_restores_with_data(driver: LocalDriver) -> None:
    iid = uuid.uuid4()
    first, observed = await converged(driver, AccountState(ACCOUNT, (desired(iid),)))
    assert first.writes == 2  # data seeded, process started
    assert observed.instances[iid].status == "running"
    response = page(driver, iid)
    assert response.status_code == 200 and "<h1>my-site</h1>" in response.text

    again = await driver.apply(AccountState(ACCOUNT, (desired(iid),)))
    assert again.writes == 0 and again.instances[iid].status == "running"

    data = driver.instance_dir(ACCOUNT, iid) / "data"
    (data / "note.txt").write_text("customer data")
    stopped = await driver.apply(AccountState(ACCOUNT, (desired(iid, run=False),)))
    assert stopped.instances[iid].status == "stopped" and stopped.writes == 1
    assert driver.port_of(ACCOUNT, iid) is None
    assert (data / "note.txt").read_text() == "customer data"

    _, restored = await converged(driver, AccountState(ACCOUNT, (desired(iid),)))
    assert restored.instances[iid].status == "running"
    port = driver.port_of(ACCOUNT, iid)
    assert httpx.get(f"http://127.0.0.1:{port}/note.txt", timeout=5).text == "customer data"

    # Not desired any more: stopped, its data kept (only remove_instance deletes, after a fresh read).
    absent = await driver.apply(AccountState(ACCOUNT, ()))
    assert absent.writes == 1 and driver.port_of(ACCOUNT, iid) is None
    assert (data / "note.txt").read_text() == "customer data"
    await driver.remove_instance(ACCOUNT, iid)
    assert not driver.instance_dir(ACCOUNT, iid).exists()
    await driver.remove_instance(ACCOUNT, iid)  # idempotent


async def test_template_without_process_form_fails_clearly(driver: LocalDriver) -> None:
    iid = uuid.uuid4()
    observed = await driver.apply(AccountState(ACCOUNT, (desired(iid, template="wordpress", name="blog"),)))
    assert observed.instances[iid].status == "failed"
    assert observed.instances[iid].reason == NOT_RUNNABLE
    assert observed.writes == 0


async def test_a_process_killed_behind_our_back_comes_back(driver: LocalDriver) -> None:
    iid = uuid.uuid4()
    await converged(driver, AccountState(ACCOUNT, (desired(iid),)))
    record = driver._read_run(driver.instance_dir(ACCOUNT, iid))
    assert record is not None
    os.killpg(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while record.alive() and time.monotonic() < deadline:
        time.sleep(0.01)  # polling for the kill to land, with a deadline
    assert not record.alive()
    first, healed = await converged(driver, AccountState(ACCOUNT, (desired(iid),)))
    assert healed.instances[iid].status == "running" and first.writes == 1
    assert page(driver, iid).status_code == 200


async def test_a_new_driver_adopts_running_processes(driver: LocalDriver, tmp_path: Path) -> None:
    iid = uuid.uuid4()
    await converged(driver, AccountState(ACCOUNT, (desired(iid),)))
    pid = driver._read_run(driver.instance_dir(ACCOUNT, iid)).pid
    successor = LocalDriver(tmp_path / "instances")  # e.g. serve restarted after a SIGKILL
    observed = await successor.apply(AccountState(ACCOUNT, (desired(iid),)))
    assert observed.writes == 0 and observed.instances[iid].status == "running"
    assert successor._read_run(successor.instance_dir(ACCOUNT, iid)).pid == pid


async def test_processes_adopted_after_a_crash_are_stopped_by_a_graceful_stop(driver: LocalDriver,
                                                                               tmp_path: Path) -> None:
    ours, adopted = uuid.uuid4(), uuid.uuid4()
    crashed = LocalDriver(tmp_path / "instances")  # the serve that was killed -9: its processes live on
    await converged(crashed, AccountState(ACCOUNT, (desired(adopted, name="older"),)))
    orphan = crashed._read_run(crashed.instance_dir(ACCOUNT, adopted)).pid
    await converged(driver, AccountState(ACCOUNT, (desired(adopted, name="older"), desired(ours))))
    mine = driver._read_run(driver.instance_dir(ACCOUNT, ours)).pid

    await driver.shutdown()  # the restarted serve stops gracefully: nothing of ours outlives it

    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE
    assert not psutil.pid_exists(mine) or psutil.Process(mine).status() == psutil.STATUS_ZOMBIE
    assert driver.port_of(ACCOUNT, adopted) is None and driver.port_of(ACCOUNT, ours) is None
    assert (driver.instance_dir(ACCOUNT, adopted) / "data" / "index.html").exists()  # data stays


async def test_env_logs_and_restart(driver: LocalDriver) -> None:
    iid = uuid.uuid4()
    env = PlainEnv(("GREETING", "hello"))
    await converged(driver, AccountState(ACCOUNT, (desired(iid, env=env),)))
    record = driver._read_run(driver.instance_dir(ACCOUNT, iid))
    assert psutil.Process(record.pid).environ()["GREETING"] == "hello"
    assert env.reads == 1  # read to start the process, not on the passes that found it running
    page(driver, iid)
    lines = await driver.logs(iid, tail=50)
    assert any('"GET / HTTP/1.1" 200' in line for line in lines)
    await driver.restart(iid)
    assert driver.port_of(ACCOUNT, iid) is None
    first, back = await converged(driver, AccountState(ACCOUNT, (desired(iid),)))
    assert back.instances[iid].status == "running" and first.writes == 1


async def test_throttled_runs_with_lower_priority(driver: LocalDriver) -> None:
    iid = uuid.uuid4()
    _, observed = await converged(driver, AccountState(ACCOUNT, (desired(iid, throttled=True),)))
    assert observed.instances[iid].status == "throttled"
    record = driver._read_run(driver.instance_dir(ACCOUNT, iid))
    assert psutil.Process(record.pid).nice() > 0


async def test_observe_reports_what_runs_without_changing_it(driver: LocalDriver) -> None:
    running, stopped = uuid.uuid4(), uuid.uuid4()
    await converged(driver, AccountState(ACCOUNT, (desired(running), desired(stopped, run=False, name="other"))))
    seen = await driver.observe(ACCOUNT)
    assert seen.instances[running].status == "running"
    assert stopped not in seen.instances  # never started: nothing of it exists on the runtime
    assert seen.writes == 0 and driver.port_of(ACCOUNT, running) is not None
