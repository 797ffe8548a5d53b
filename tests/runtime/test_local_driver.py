"""The local runtime driver against real child processes (static-site's `python -m http.server`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import locale
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
import structlog.testing

from jushostit.catalog.loader import load_templates
from jushostit.catalog.spec import TemplateSpec
from jushostit.runtime.local.driver import NOT_RUNNABLE, STOP_TIMEOUT_SECONDS, LocalDriver
from jushostit.runtime.protocol import AccountState, DesiredInstance, Observed, ObservedInstance
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


def static_site_with(**process: object) -> TemplateSpec:
    """static-site's template with some of its process form changed."""
    static = TEMPLATES["static-site"]
    assert static.process is not None
    return static.model_copy(update={"process": static.process.model_copy(update=process)})


def desired(instance_id: uuid.UUID, *, run: bool = True, throttled: bool = False, template: str = "static-site",
            name: str = "my-site", env: PlainEnv | None = None) -> DesiredInstance:
    spec = TEMPLATES[template]
    return DesiredInstance(
        id=instance_id, slug=f"{name}-abc123", name=name, template_code=template, tier=spec.default_tier, run=run,
        throttled=throttled, deleted=False, plain_env=(), secret_env=env or PlainEnv(("GREETING", "hello")),
        url=f"http://{name}-abc123.localhost:8000/", host=f"{name}-abc123.localhost", template=spec,
        resources=spec.tiers[spec.default_tier], database=None,
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


async def test_observe_tells_throttled_running_and_stopped_instances_apart(driver: LocalDriver) -> None:
    throttled, running, stopped, died = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def state(*, paused_runs: bool) -> AccountState:
        return AccountState(ACCOUNT, (desired(throttled, throttled=True, name="slow"), desired(running),
                                      desired(stopped, run=paused_runs, name="paused"), desired(died, name="crashy")))

    first, _ = await converged(driver, state(paused_runs=True))
    assert first.writes == 8  # every instance's data seeded and process started, each counted
    # Stopped by us: its directory stays, without a run.json.
    assert (await driver.apply(state(paused_runs=False))).writes == 1
    record = driver._read_run(driver.instance_dir(ACCOUNT, died))
    assert record is not None
    os.killpg(record.pid, signal.SIGKILL)  # died behind our back: its run.json still names it
    await eventually(lambda: not record.alive(), "the killed process to be gone")

    seen = await driver.observe(ACCOUNT)

    assert {iid: instance.status for iid, instance in seen.instances.items()} == {
        throttled: "throttled", running: "running", stopped: "stopped", died: "stopped"}
    assert seen.writes == 0


async def test_instances_no_longer_desired_are_stopped_once(driver: LocalDriver) -> None:
    one, two = uuid.uuid4(), uuid.uuid4()
    await converged(driver, AccountState(ACCOUNT, (desired(one), desired(two, name="two"))))
    assert (await driver.apply(AccountState(ACCOUNT, ()))).writes == 2  # each stop counted
    assert driver.port_of(ACCOUNT, one) is None and driver.port_of(ACCOUNT, two) is None
    again = await driver.apply(AccountState(ACCOUNT, ()))  # their directories stay, with no process to stop
    assert again.writes == 0 and again.instances == {}
    assert (driver.instance_dir(ACCOUNT, one) / "data" / "index.html").exists()


async def test_unknown_instances_have_no_logs_and_restarting_one_does_nothing(driver: LocalDriver) -> None:
    unknown = uuid.uuid4()
    assert await driver.logs(unknown, tail=10) == []
    await driver.restart(unknown)
    assert not any(driver.root.glob(f"*/{unknown}"))


class MissingEnv(PlainEnv):
    def values(self) -> tuple[tuple[str, str], ...]:
        raise ValueError("a generated value is missing")


async def test_an_instance_that_never_started_has_no_logs(driver: LocalDriver) -> None:
    iid = uuid.uuid4()
    observed = await driver.apply(AccountState(ACCOUNT, (desired(iid, env=MissingEnv()),)))
    assert observed.instances[iid].status == "failed"
    assert driver.instance_dir(ACCOUNT, iid).exists()  # its data was seeded; no process ever wrote a log
    assert await driver.logs(iid, tail=10) == []


# Writes raw bytes (one not UTF-8) and exits, as a crashing service does; no braces: commands are templates.
CRASHING = ("import sys; sys.stdout.buffer.write(b'starting\\n  config: /data \\t\\nbad byte \\xff here\\n"
            "exit code XX\\n'); sys.exit(3)")
BAD_BYTE = b"\xff".decode(locale.getpreferredencoding(False), errors="replace")  # the log is read as text


async def test_logs_return_the_last_n_lines_as_the_process_wrote_them(driver: LocalDriver) -> None:
    iid = uuid.uuid4()
    crashing = static_site_with(command=["{python}", "-c", CRASHING])
    await driver.apply(AccountState(ACCOUNT, (dataclasses.replace(desired(iid), template=crashing),)))
    record = driver._read_run(driver.instance_dir(ACCOUNT, iid))
    assert record is not None
    await eventually(lambda: not record.alive(), "the process to exit")

    assert await driver.logs(iid, tail=3) == ["  config: /data \t", f"bad byte {BAD_BYTE} here", "exit code XX"]
    assert await driver.logs(iid, tail=50) == ["starting", "  config: /data \t",
                                               f"bad byte {BAD_BYTE} here", "exit code XX"]


@pytest.mark.skipif(os.geteuid() != 0 and resource.getrlimit(resource.RLIMIT_NICE)[0] < 20,
                    reason="only root (or a high RLIMIT_NICE) may lower a process's niceness again")
async def test_unthrottling_restores_normal_priority_in_place(driver: LocalDriver) -> None:
    iid = uuid.uuid4()
    await converged(driver, AccountState(ACCOUNT, (desired(iid, throttled=True),)))
    record = driver._read_run(driver.instance_dir(ACCOUNT, iid))
    assert record is not None and psutil.Process(record.pid).nice() > 0
    observed = await driver.apply(AccountState(ACCOUNT, (desired(iid),)))
    assert observed.instances[iid].status == "running" and observed.writes == 1
    now = driver._read_run(driver.instance_dir(ACCOUNT, iid))
    assert now is not None and now.pid == record.pid and not now.throttled  # the same process, reniced
    assert psutil.Process(record.pid).nice() == 0


async def test_a_graceful_stop_leaves_alone_what_another_worker_started_since(driver: LocalDriver,
                                                                              tmp_path: Path) -> None:
    iid = uuid.uuid4()
    await converged(driver, AccountState(ACCOUNT, (desired(iid),)))
    await driver.apply(AccountState(ACCOUNT, (desired(iid, run=False),)))  # this worker stopped it ...
    other = LocalDriver(tmp_path / "instances")
    await converged(other, AccountState(ACCOUNT, (desired(iid),)))  # ... and another one started it again
    try:
        started = other._read_run(other.instance_dir(ACCOUNT, iid))
        assert started is not None

        await driver.shutdown()

        record = driver._read_run(driver.instance_dir(ACCOUNT, iid))
        assert record is not None and record.pid == started.pid and record.alive()
        assert page(driver, iid).status_code == 200
    finally:
        await other.shutdown()


async def test_accounts_are_kept_apart(driver: LocalDriver) -> None:
    other_account, mine, theirs = uuid.UUID(int=8), uuid.uuid4(), uuid.uuid4()
    await converged(driver, AccountState(ACCOUNT, (desired(mine),)))
    record = driver._read_run(driver.instance_dir(ACCOUNT, mine))
    assert record is not None
    try:
        await converged(driver, AccountState(other_account, (desired(theirs, name="theirs"),)))

        again = await driver.apply(AccountState(ACCOUNT, (desired(mine),)))  # theirs is not ours to stop
        assert again.writes == 0 and set(again.instances) == {mine}
        assert set((await driver.observe(ACCOUNT)).instances) == {mine}
        await driver.destroy(ACCOUNT)
        assert not record.alive() and not driver.account_dir(ACCOUNT).exists()  # all of it gone, only it
        assert driver.port_of(other_account, theirs) is not None
        assert (await driver.observe(other_account)).instances[theirs].status == "running"
    finally:
        await driver.destroy(other_account)


async def test_a_recorded_pid_now_used_by_another_process_is_not_taken_for_ours(driver: LocalDriver) -> None:
    iid = uuid.uuid4()
    await converged(driver, AccountState(ACCOUNT, (desired(iid),)))
    await driver.restart(iid)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        # The pid was reused: the process with it started half a second after the one run.json recorded.
        started = psutil.Process(stranger.pid).create_time() - 0.5
        (driver.instance_dir(ACCOUNT, iid) / "run.json").write_text(json.dumps(
            {"pid": stranger.pid, "started": started, "port": 9, "throttled": False}))

        assert driver.port_of(ACCOUNT, iid) is None
        assert (await driver.observe(ACCOUNT)).instances[iid].status == "stopped"
        _, observed = await converged(driver, AccountState(ACCOUNT, (desired(iid),)))
        assert observed.instances[iid].status == "running" and page(driver, iid).status_code == 200
        assert stranger.poll() is None  # started a process of its own; the stranger was left alone
    finally:
        stranger.kill()
        stranger.wait()


async def test_one_broken_instance_does_not_keep_its_siblings_from_converging(driver: LocalDriver) -> None:
    broken, sibling = uuid.uuid4(), uuid.uuid4()
    escaping = static_site_with(seed_files={"../outside.txt": "not in the data directory"})
    state = AccountState(ACCOUNT, (dataclasses.replace(desired(broken, name="broken"), template=escaping),
                                   desired(sibling)))

    observed = await driver.apply(state)

    assert observed.instances[broken] == ObservedInstance(
        "failed", "the runtime could not apply it",
        error="ValueError: seed file '../outside.txt' escapes the data directory")
    assert observed.instances[sibling].status in {"provisioning", "running"}
    assert observed.writes == 2  # the sibling's data seeded and its process started; nothing for the broken one
    assert not (driver.instance_dir(ACCOUNT, broken) / "outside.txt").exists()
    await eventually(lambda: driver.port_of(ACCOUNT, sibling) is not None, "the sibling to run")


async def test_a_stopped_instance_leaves_no_run_record(driver: LocalDriver) -> None:
    """run.json names running instances only: it is what every other process reads (see the module's doc)."""
    iid = uuid.uuid4()
    await converged(driver, AccountState(ACCOUNT, (desired(iid),)))
    run = driver.instance_dir(ACCOUNT, iid) / "run.json"
    assert run.exists()
    began = time.monotonic()
    await driver.restart(iid)
    assert not run.exists()
    assert time.monotonic() - began < STOP_TIMEOUT_SECONDS  # a process that heeds SIGTERM is not waited out


async def test_stopping_logs_which_instance_and_process_it_stopped(driver: LocalDriver) -> None:
    iid = uuid.uuid4()
    await converged(driver, AccountState(ACCOUNT, (desired(iid),)))
    record = driver._read_run(driver.instance_dir(ACCOUNT, iid))
    assert record is not None
    with structlog.testing.capture_logs() as logged:
        await driver.restart(iid)
    assert {"event": "local.stopped", "instance_id": str(iid), "pid": record.pid, "log_level": "info"} in logged


# Ignores SIGTERM, says so once it does, and idles (no braces: commands are templates).
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ignoring SIGTERM', flush=True); time.sleep(600)")


async def test_a_process_ignoring_sigterm_is_killed_after_the_stop_timeout(driver: LocalDriver) -> None:
    iid = uuid.uuid4()
    stubborn = static_site_with(command=["{python}", "-c", STUBBORN])
    await driver.apply(AccountState(ACCOUNT, (dataclasses.replace(desired(iid), template=stubborn),)))
    record = driver._read_run(driver.instance_dir(ACCOUNT, iid))
    assert record is not None

    async def ignoring() -> bool:
        return "ignoring SIGTERM" in await driver.logs(iid, tail=5)

    await eventually(ignoring, "the process to ignore SIGTERM")

    began = time.monotonic()
    await asyncio.wait_for(driver.restart(iid), timeout=STOP_TIMEOUT_SECONDS + 10)
    assert time.monotonic() - began >= STOP_TIMEOUT_SECONDS  # it had its grace period first
    assert not record.alive()


async def test_an_adopted_process_ignoring_sigterm_is_killed_too(driver: LocalDriver, tmp_path: Path) -> None:
    iid = uuid.uuid4()
    stubborn = static_site_with(command=["{python}", "-c", STUBBORN])
    crashed = LocalDriver(tmp_path / "instances")  # started it, then died: the process is not our child
    await crashed.apply(AccountState(ACCOUNT, (dataclasses.replace(desired(iid), template=stubborn),)))
    record = driver._read_run(driver.instance_dir(ACCOUNT, iid))
    assert record is not None

    async def ignoring() -> bool:
        return "ignoring SIGTERM" in await driver.logs(iid, tail=5)

    await eventually(ignoring, "the process to ignore SIGTERM")
    await asyncio.wait_for(driver.restart(iid), timeout=STOP_TIMEOUT_SECONDS + 10)
    await eventually(lambda: not record.alive(), "the killed process to be gone")


async def test_a_stray_in_a_stopped_instance_is_killed_and_counted(driver: LocalDriver) -> None:
    iid = uuid.uuid4()
    await converged(driver, AccountState(ACCOUNT, (desired(iid),)))
    await driver.restart(iid)  # stopped; then a process no run.json names turns up in its data directory
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True,
                             cwd=driver.instance_dir(ACCOUNT, iid) / "data")
    try:
        observed = await driver.apply(AccountState(ACCOUNT, (desired(iid, run=False),)))
        assert observed.writes == 1 and observed.instances[iid].status == "stopped"
        stray.wait(timeout=5)  # gone: raises TimeoutExpired while it still runs (the driver reaped it)
    finally:
        stray.kill()
        stray.wait()


async def test_a_stopped_instance_reports_why_it_cannot_run(driver: LocalDriver) -> None:
    iid = uuid.uuid4()
    broken = dataclasses.replace(desired(iid, run=False), template=None, problem="its template is missing")
    observed = await driver.apply(AccountState(ACCOUNT, (broken,)))
    assert observed.instances[iid] == ObservedInstance("stopped", "its template is missing")


# No braces: a command's parts are str.format templates ({python}, {port}, ...).
PROBE = (
    "import json, os, sys; print(json.dumps(dict(argv=sys.argv[1:], python=sys.executable, cwd=os.getcwd(), "
    "env=dict((k, os.environ.get(k)) for k in ('PATH', 'HOME', 'PORT', 'GREETING', 'SECRET_KEYS')), "
    "stdin=sys.stdin.read(), own_session=os.getsid(0) == os.getpid())))"
)


async def test_a_process_starts_with_its_substitutions_its_environment_only_and_its_own_session(
    driver: LocalDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a template's process gets: {python} {port} {data_dir} {host} filled in, its data dir as cwd and
    HOME, PATH and PORT, its instance's values — and nothing else of ours (no secret of the control plane in its
    environment), no stdin, a session of its own (so a stop reaches its children). Its log keeps every run."""
    monkeypatch.setenv("SECRET_KEYS", "the control plane's own secret")
    iid = uuid.uuid4()
    probe = static_site_with(command=["{python}", "-c", PROBE, "{port}", "{data_dir}", "{host}"])
    instance = dataclasses.replace(desired(iid, env=PlainEnv(("GREETING", "hello"))), template=probe)
    await driver.apply(AccountState(ACCOUNT, (instance,)))
    directory = driver.instance_dir(ACCOUNT, iid)

    async def lines() -> list[str]:
        return await driver.logs(iid, tail=10)

    await eventually(lines, "the probe's line in its log")
    seen = json.loads((await lines())[0])
    data = str(directory / "data")
    assert seen["argv"][1:] == [data, "127.0.0.1"] and seen["argv"][0] == seen["env"]["PORT"]
    assert seen["python"] == sys.executable and seen["cwd"] == data
    assert seen["env"] == {"PATH": os.environ["PATH"], "HOME": data, "PORT": seen["argv"][0], "GREETING": "hello",
                           "SECRET_KEYS": None}
    assert seen["stdin"] == "" and seen["own_session"] is True

    async def two_runs() -> bool:
        # Each pass (as the reconciler's follow-ups) starts it again once it has exited; a pass that finds the
        # first run still shutting down after its line leaves it be. Its log is appended to, never replaced.
        if len(await lines()) < 2:
            await driver.apply(AccountState(ACCOUNT, (instance,)))
        return len(await lines()) >= 2

    await eventually(two_runs, "the second run's line after the first")
    assert [json.loads(line)["argv"][1:] for line in await lines()][:2] == [[data, "127.0.0.1"]] * 2


async def test_a_process_gets_a_plain_path_when_the_server_has_none(
    driver: LocalDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PATH")
    iid = uuid.uuid4()
    probe = static_site_with(command=["{python}", "-c", PROBE])
    await driver.apply(AccountState(ACCOUNT, (dataclasses.replace(desired(iid), template=probe),)))

    async def lines() -> list[str]:
        return await driver.logs(iid, tail=1)

    await eventually(lines, "the probe's line in its log")
    assert json.loads((await lines())[0])["env"]["PATH"] == "/usr/bin:/bin"


async def test_a_template_whose_program_is_not_installed_fails_with_that_reason_and_nothing_is_made(
    driver: LocalDriver,
) -> None:
    iid = uuid.uuid4()
    missing = static_site_with(command=["no-such-program-jushostit", "{port}"])
    observed = await driver.apply(AccountState(ACCOUNT, (dataclasses.replace(desired(iid), template=missing),)))
    assert observed.instances[iid] == ObservedInstance(
        "failed", "'no-such-program-jushostit' is not installed on this server")
    assert observed.writes == 0 and not driver.instance_dir(ACCOUNT, iid).exists()


async def test_seed_files_are_written_in_nested_folders_with_the_instances_name_and_address(
    driver: LocalDriver,
) -> None:
    iid = uuid.uuid4()
    seeded = static_site_with(seed_files={"index.html": "<h1>{name}</h1>",
                                          "assets/css/site.css": "/* {name} at {url} */"})
    await driver.apply(AccountState(ACCOUNT, (dataclasses.replace(desired(iid, name="shop"), template=seeded),)))
    data = driver.instance_dir(ACCOUNT, iid) / "data"
    assert (data / "index.html").read_text() == "<h1>shop</h1>"
    assert (data / "assets" / "css" / "site.css").read_text() == "/* shop at http://shop-abc123.localhost:8000/ */"


# An upstream whose every answer is a 500 (no braces: the command's parts are format templates).
FAILING = (
    "import http.server, sys\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(500); self.send_header('Content-Length', '0'); self.end_headers()\n"
    "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
)


async def test_an_instance_answering_500_on_its_health_path_is_never_running(driver: LocalDriver) -> None:
    iid = uuid.uuid4()
    failing = static_site_with(command=["{python}", "-c", FAILING, "{port}"])
    instance = dataclasses.replace(desired(iid), template=failing)
    await driver.apply(AccountState(ACCOUNT, (instance,)))
    port = driver.port_of(ACCOUNT, iid)
    assert port is not None

    async def answering_500() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"http://127.0.0.1:{port}/")).status_code == 500
        except httpx.TransportError:
            return False

    await eventually(answering_500, "the instance to answer (with its 500)")
    observed = await driver.apply(AccountState(ACCOUNT, (instance,)))
    assert observed.instances[iid] == ObservedInstance("provisioning", "waiting for the health check")


async def test_throttling_in_place_is_recorded_so_observe_sees_it_and_the_next_pass_writes_nothing(
    driver: LocalDriver,
) -> None:
    iid = uuid.uuid4()
    await converged(driver, AccountState(ACCOUNT, (desired(iid),)))
    throttled = await driver.apply(AccountState(ACCOUNT, (desired(iid, throttled=True),)))
    assert throttled.instances[iid].status == "throttled" and throttled.writes == 1  # reniced, not restarted
    assert (await driver.observe(ACCOUNT)).instances[iid].status == "throttled"
    again = await driver.apply(AccountState(ACCOUNT, (desired(iid, throttled=True),)))
    assert again.writes == 0


async def test_a_process_that_exits_at_once_is_failed_with_a_pointer_to_its_logs(driver: LocalDriver) -> None:
    iid = uuid.uuid4()
    exiting = static_site_with(command=["false"])  # exits before anything could answer its health check
    instance = dataclasses.replace(desired(iid), template=exiting)
    seen: list[ObservedInstance] = []

    async def failed() -> bool:
        seen.append((await driver.apply(AccountState(ACCOUNT, (instance,)))).instances[iid])
        return seen[-1].status == "failed"

    await eventually(failed, "a pass to find the process gone")
    assert seen[-1] == ObservedInstance("failed", "process exited; see the instance logs")
