"""Level-triggered healing: a process killed behind the control plane's back is back after the next resync."""

from __future__ import annotations

import itertools
import os
import signal
import uuid
from datetime import UTC, datetime

import psutil
import pytest
from croniter import croniter
from procrastinate.periodic import PeriodicDeferrer

from jushostit.kit import jobs
from jushostit.kit.jobs import interval_cron
from jushostit.models import Account
from jushostit.reconcile import tasks
from jushostit.reconcile.tasks import RESYNC_TASK, resync_all, schedule_resync
from jushostit.runtime.local.driver import LocalDriver
from jushostit.runtime.protocol import AccountState, Observed
from tests.live import Live, eventually, processes_in


async def test_a_process_killed_behind_our_back_is_back_after_the_next_resync(live: Live) -> None:
    owner = await live.signup("Heal Co")
    await live.checkout(owner, "free")
    instance = await live.ordered(owner, "phoenix")
    await live.work()
    await live.until_status(owner, instance["id"], "running")
    [victim] = processes_in(live.data_dir(instance))

    os.killpg(victim.pid, signal.SIGKILL)  # behind the control plane's back

    async def dead() -> bool:
        try:
            return victim.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    await eventually(dead, "the instance process to die")
    down = await live.page(instance["slug"])
    assert down.status_code == 503  # the router does not forward to a dead port

    result = await resync_all()  # the periodic job's body: every account, in chunks
    assert result is not None and result[0] >= 1 and result[1] >= 1
    await live.work()  # the follow-up that looks at the starting process again
    await live.until_status(owner, instance["id"], "running")

    [revived] = processes_in(live.data_dir(instance))
    assert revived.pid != victim.pid
    page = await live.page(instance["slug"])
    assert page.status_code == 200 and "<h1>phoenix</h1>" in page.text
    body = await live.instance(owner, instance["id"])
    assert body["status"] == "running" and body["last_error"] is None
    # It came back; each observed status is recorded (the new process is seen `provisioning` first unless its
    # first health check already answered); "ready" was mailed once, not again.
    assert [c.after["status"] for c in await live.audit("instance.status_changed", instance["id"])] in (
        ["running"], ["running", "provisioning", "running"]
    )
    assert [e.template for e in await live.emails_of(owner) if e.template.startswith("instance_")] == ["instance_ready"]


async def test_restart_replaces_the_process_through_the_runtime_and_a_reconcile(live: Live) -> None:
    owner = await live.signup("Restart Co")
    await live.checkout(owner, "free")
    instance = await live.ordered(owner, "bouncy")
    await live.work()
    await live.until_status(owner, instance["id"], "running")
    [before] = processes_in(live.data_dir(instance))

    response = await live.client.post(f"/v1/instances/{instance['id']}/restart", headers=owner.headers)
    assert response.status_code == 202, response.text
    async def drained() -> bool:
        await live.work()  # the restart job, then the reconcile it queues
        return not await live.queued(owner.account_id)

    await eventually(drained, "the restart and the reconcile it queues to run")

    [after] = processes_in(live.data_dir(instance))
    assert after.pid != before.pid and not before.is_running()
    assert (await live.page(instance["slug"])).status_code == 200
    assert (await live.instance(owner, instance["id"]))["status"] == "running"
    assert len(await live.audit("instance.restart_requested", instance["id"])) == 1



class RecordsAccounts:
    """The real local driver, recording which accounts it was asked to apply, in order."""

    def __init__(self, inner: LocalDriver) -> None:
        self.inner = inner
        self.applied: list[uuid.UUID] = []

    async def apply(self, desired: AccountState) -> Observed:
        self.applied.append(desired.account_id)
        return await self.inner.apply(desired)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_the_resync_reaches_every_account_whatever_order_they_were_stored_in(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stored largest id first: chunks read in storage order rather than id order would jump past the others.
    ids = [uuid.UUID(f"{first:x}{uuid.uuid4().hex[1:]}") for first in (0xE, 0xB, 0x8, 0x5, 0x2)]
    for account_id in ids:
        async with live.container.database.unit_of_work() as session:
            session.add(Account(id=account_id, name="Stored Out Of Order"))
        live.accounts.add(account_id)
    driver = RecordsAccounts(live.driver)
    monkeypatch.setattr(tasks, "driver_for", lambda settings, database, box: driver)
    monkeypatch.setattr(tasks, "RESYNC_CHUNK", 2)

    assert await resync_all() is not None

    assert [a for a in driver.applied if a in ids] == sorted(ids)


@pytest.mark.parametrize("interval", [5, 20, 60, 300, 600])
def test_the_resync_runs_once_per_interval(interval: int) -> None:
    # croniter reads the expression as procrastinate's periodic tasks do (a sixth field is seconds).
    fires = croniter(interval_cron(interval), datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC))
    times = [fires.get_next(datetime) for _ in range(5)]
    assert {(b - a).total_seconds() for a, b in itertools.pairwise(times)} == {interval}


def test_a_worker_defers_the_resync_once_per_interval_fixed_at_its_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs.app.periodic_registry, "periodic_tasks", {})  # this test's registrations only
    schedule_resync(300)
    schedule_resync(20)  # a second start in the same process keeps the first interval (and does not fail)

    deferrer = PeriodicDeferrer(jobs.app.periodic_registry)  # what the worker runs to defer periodic jobs
    start = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    first = list(deferrer.get_previous_tasks(at=start + 1))
    later = list(deferrer.get_previous_tasks(at=start + 1 + 1200))
    assert [(periodic.task.name, at - start) for periodic, at in first + later] == [
        (RESYNC_TASK, 0), (RESYNC_TASK, 300), (RESYNC_TASK, 600), (RESYNC_TASK, 900), (RESYNC_TASK, 1200)
    ]
