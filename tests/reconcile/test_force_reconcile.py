"""The admin force-reconcile has an effect of its own: it queues a pass now, so a process killed behind the
control plane's back is back without waiting for the periodic resync."""

from __future__ import annotations

import os
import signal

import psutil

from jushostit.triggers import queueing_lock
from tests.live import Live, eventually, processes_in


async def _dead(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_admin_force_reconcile_heals_without_waiting_for_the_resync(live: Live) -> None:
    admin = await live.admin()
    owner = await live.signup("Forced Co")
    await live.checkout(owner, "free")
    instance = await live.ordered(owner, "forced")
    await live.work()
    await live.until_status(owner, instance["id"], "running")
    [victim] = processes_in(live.data_dir(instance))
    os.killpg(victim.pid, signal.SIGKILL)  # behind the control plane's back: no fact changed
    await eventually(lambda: _dead(victim), "the instance process to die")
    assert (await live.page(instance["slug"])).status_code == 503
    assert await live.jobs_of(owner.account_id, "todo") == []  # nothing would bring it back before a resync

    response = await live.client.post(f"/v1/admin/accounts/{owner.account_id}/reconcile", headers=admin.headers)

    assert response.status_code == 202, response.text
    assert response.json() == {"account_id": owner.account_id, "queued": True}
    # That request queued the pass (a fact-change reconcile, on the account's queueing lock), and audited it.
    assert [job.queueing_lock for job in await live.jobs_of(owner.account_id, "todo")] == [
        queueing_lock(owner.account_id)
    ]
    [requested] = await live.audit("admin.reconcile_requested", owner.account_id)
    assert str(requested.actor_id) == admin.user_id

    await live.work()  # the queued pass, then the follow-up that finds the restarted process serving

    [revived] = processes_in(live.data_dir(instance))
    assert revived.pid != victim.pid
    page = await live.page(instance["slug"])
    assert page.status_code == 200 and "<h1>forced</h1>" in page.text
    body = await live.instance(owner, instance["id"])
    assert body["status"] == "running" and body["last_error"] is None
    assert await live.jobs_of(owner.account_id, "todo") == []
