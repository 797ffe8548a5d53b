"""Level-triggered healing: a process killed behind the control plane's back is back after the next resync."""

from __future__ import annotations

import os
import signal

import psutil

from jushostit.reconcile.tasks import resync_all
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

