"""End of entitlement and deletion, with real effects: expiry stops the process and keeps the data; the
retention period (and the daily purge job) deletes it; DELETE removes workload and data now or at period end."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import time_machine

from jushostit.instances.tasks import purge_expired
from tests.live import Live, processes_in


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_free_period_end_expires_then_retention_deletes(live: Live) -> None:
    live.configure(expired_retention_days=7)
    owner = await live.signup("Lapse Co")
    subscription = (await live.checkout(owner, "free"))["subscription"]
    period_end = _at(subscription["current_period_end"])
    instance = await live.ordered(owner, "lapsing")
    await live.work()
    await live.until_status(owner, instance["id"], "running")
    (live.data_dir(instance) / "note.txt").write_text("keep me")

    with time_machine.travel(period_end + timedelta(minutes=1)):
        observed = await live.reconcile(owner.account_id)
        assert observed is not None and observed.instances[uuid.UUID(instance["id"])].status == "stopped"
        row = await live.row(instance["id"])
        assert row.observed_status == "expired" and row.desired_level == "expired"
        assert row.expired_at is not None and row.deleted_at is None
        assert processes_in(live.data_dir(instance)) == []
        assert (live.data_dir(instance) / "note.txt").read_text() == "keep me"  # data kept
        page = await live.page(instance["slug"])
        assert page.status_code == 503 and "suspended" in page.text
        [expired] = await live.emails_of(owner, "instance_expired")
        assert "lapsing" in expired.subject and "kept for 7 days" in expired.body
        # Not yet past retention: the daily purge has nothing to do for this account.
        await purge_expired()
        assert await live.jobs_of(owner.account_id, "todo") == []

    with time_machine.travel(row.expired_at + timedelta(days=6, hours=23)):
        await purge_expired()
        await live.reconcile(owner.account_id)
        assert (await live.row(instance["id"])).observed_status == "expired"  # still within the retention
        assert (live.data_dir(instance) / "note.txt").exists()
    with time_machine.travel(row.expired_at + timedelta(days=7, minutes=1)):
        assert await purge_expired() >= 1  # the daily retention job queues this account's reconcile
        assert len(await live.jobs_of(owner.account_id, "todo")) == 1
        await live.work()
        row = await live.row(instance["id"])
        assert row.observed_status == "deleted" and row.deleted_at is not None
        assert not live.instance_dir(instance).exists()
        assert (await live.page(instance["slug"])).status_code == 404
        assert len(await live.emails_of(owner, "instance_deleted")) == 1
    statuses = [c.after["status"] for c in await live.audit("instance.status_changed", instance["id"])]
    assert statuses == ["running", "expired", "deleted"]


async def test_delete_now_removes_workload_and_data(live: Live) -> None:
    owner = await live.signup("Delete Co")
    await live.checkout(owner, "free")
    instance = await live.ordered(owner, "doomed")
    await live.work()
    await live.until_status(owner, instance["id"], "running")
    assert (await live.page(instance["slug"])).status_code == 200

    response = await live.client.delete(f"/v1/instances/{instance['id']}", headers=owner.headers)
    assert response.status_code == 202, response.text
    assert response.json()["delete_requested_at"] is not None
    assert response.json()["status"] == "running"  # the truth until the reconciler has acted
    await live.work()

    assert (await live.page(instance["slug"])).status_code == 404
    assert not live.instance_dir(instance).exists()
    assert processes_in(live.settings.data_dir) == []
    gone = await live.client.get(f"/v1/instances/{instance['id']}", headers=owner.headers)
    assert gone.status_code == 404
    row = await live.row(instance["id"])
    assert row.deleted_at is not None and row.observed_status == "deleted"
    assert len(await live.audit("instance.delete_requested", instance["id"])) == 1
    assert len(await live.emails_of(owner, "instance_deleted")) == 1
    # The slot is free again: a new instance may be ordered on the same plan.
    assert (await live.order(owner, "doomed")).status_code == 201


async def test_delete_at_period_end_keeps_it_running_until_then(live: Live) -> None:
    owner = await live.signup("Later Co")
    subscription = (await live.checkout(owner, "free"))["subscription"]
    period_end = _at(subscription["current_period_end"])
    instance = await live.ordered(owner, "until-end")
    await live.work()

    response = await live.client.delete(f"/v1/instances/{instance['id']}", params={"at": "period_end"},
                                        headers=owner.headers)
    assert response.status_code == 202, response.text
    assert _at(response.json()["delete_requested_at"]) == period_end
    await live.work()
    body = await live.instance(owner, instance["id"])
    assert body["status"] == "running"
    assert (await live.page(instance["slug"])).status_code == 200

    with time_machine.travel(period_end - timedelta(minutes=1)):
        await live.reconcile(owner.account_id)
        assert (await live.row(instance["id"])).observed_status == "running"
    with time_machine.travel(period_end + timedelta(seconds=1)):
        await live.reconcile(owner.account_id)
        row = await live.row(instance["id"])
        assert row.observed_status == "deleted" and row.deleted_at is not None
        assert not live.instance_dir(instance).exists()
        assert (await live.page(instance["slug"])).status_code == 404
