"""One broken instance never blocks its account (issue 7 §2): an instance whose template is unreadable or whose
generated value is missing is `failed` with a clear reason, alone; its siblings converge; enforcement still
stops it; a template that gains a generated variable fills it in for existing instances; an order never
answers 500."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psutil
import pytest
from sqlalchemy import delete, select, update

from jushostit.catalog.loader import load_templates
from jushostit.models import ServiceTemplate, StoredSecret
from jushostit.reconcile.desired import TEMPLATE_UNAVAILABLE
from tests.live import Live, processes_in


def static_site_spec(code: str, **changes: Any) -> dict[str, Any]:
    [shipped] = [t for t in load_templates() if t.code == "static-site"]
    return {**shipped.model_dump(mode="json", exclude_none=True), "code": code, **changes}


@pytest.fixture
async def custom_template(live: Live) -> AsyncIterator[str]:
    """An operator's template (a copy of static-site), removed after the test."""
    code = f"custom-{uuid.uuid4().hex[:8]}"
    async with live.container.database.unit_of_work() as session:
        session.add(ServiceTemplate(code=code, kind="app", spec=static_site_spec(code), source="admin"))
    yield code
    async with live.container.database.unit_of_work() as session:
        await session.execute(delete(ServiceTemplate).where(ServiceTemplate.code == code))


async def set_spec(live: Live, code: str, spec: dict[str, Any]) -> None:
    async with live.container.database.unit_of_work() as session:
        await session.execute(update(ServiceTemplate).where(ServiceTemplate.code == code).values(spec=spec))


async def test_an_unreadable_template_fails_its_instance_alone_and_enforcement_still_stops_it(
    live: Live, custom_template: str
) -> None:
    admin = await live.admin()
    owner = await live.paid_starter(admin, "Broken Co")
    broken = await live.ordered(owner, "fragile", template=custom_template)
    await live.work()
    await live.until_status(owner, broken["id"], "running")
    [fragile_process] = processes_in(live.data_dir(broken))

    await set_spec(live, custom_template, {"code": custom_template, "no": "longer a template"})  # an upgrade gone wrong
    sibling = await live.order(owner, "sturdy")  # ordering still works: never a 500
    assert sibling.status_code == 201, sibling.text
    await live.work()

    assert (await live.until_status(owner, sibling.json()["id"], "running"))["status"] == "running"
    failed = await live.until_status(owner, broken["id"], "failed")
    assert failed["status_reason"] == TEMPLATE_UNAVAILABLE
    assert failed["last_error"] is None  # permanent until the facts change: nothing to retry
    assert fragile_process.is_running()  # left as it was, data kept: only enforcement touches it
    assert (live.data_dir(broken) / "index.html").exists()

    suspended = await live.client.post(f"/v1/admin/accounts/{owner.account_id}/suspend",
                                       json={"reason": "abuse"}, headers=admin.headers)
    assert suspended.status_code == 200, suspended.text
    await live.work()
    await live.until_status(owner, sibling.json()["id"], "stopped")
    assert processes_in(live.data_dir(broken)) == [] and processes_in(live.data_dir(sibling.json())) == []
    assert (await live.page(broken["slug"])).status_code == 503
    assert (live.data_dir(broken) / "index.html").exists()  # stopped, never deleted


async def test_a_missing_generated_value_fails_that_instance_only(live: Live, custom_template: str) -> None:
    owner = await live.paid_starter(await live.admin(), "Secretless Co")
    spec = static_site_spec(custom_template, env=[{"name": "SITE_TOKEN", "generate": {"length": 16}}])
    await set_spec(live, custom_template, spec)
    lost = await live.ordered(owner, "lost", template=custom_template)
    fine = await live.ordered(owner, "fine")
    async with live.container.database.unit_of_work() as session:  # a value lost, or a key rotated away
        await session.execute(update(StoredSecret).where(StoredSecret.owner_id == uuid.UUID(lost["id"]))
                              .values(ciphertext="not a fernet token"))
    await live.work()

    assert (await live.until_status(owner, fine["id"], "running"))["last_error"] is None
    failed = await live.until_status(owner, lost["id"], "failed")
    assert failed["status_reason"] == "its configuration is incomplete"
    assert "SITE_TOKEN" not in (failed["last_error"] or "")  # customers get a safe note, never the detail
    assert processes_in(live.data_dir(lost)) == []
    row = await live.row(lost["id"])
    assert row.last_error is not None and "SITE_TOKEN" in row.last_error  # admins get the detail


async def test_a_template_that_gains_a_generated_value_fills_it_in_for_existing_instances(
    live: Live, custom_template: str
) -> None:
    owner = await live.signup("Upgrade Co")
    await live.checkout(owner, "free")
    instance = await live.ordered(owner, "upgraded", template=custom_template)
    await live.work()
    await live.until_status(owner, instance["id"], "running")

    spec = static_site_spec(custom_template, env=[{"name": "SESSION_KEY", "generate": {"length": 24}, "secret": True}])
    await set_spec(live, custom_template, spec)  # the operator ships a version that needs a new secret
    await live.reconcile(owner.account_id)

    async with live.container.database.sessionmaker() as session:
        names = (await session.scalars(select(StoredSecret.name).where(
            StoredSecret.owner_id == uuid.UUID(instance["id"])))).all()
    assert names == ["SESSION_KEY"]
    assert len(await live.audit("instance.values_generated", instance["id"])) == 1
    again = await live.reconcile(owner.account_id)  # generated once, not on every pass
    assert again is not None and len(await live.audit("instance.values_generated", instance["id"])) == 1

    restarted = await live.client.post(f"/v1/instances/{instance['id']}/restart", headers=owner.headers)
    assert restarted.status_code == 202
    await live.work()
    await live.until_status(owner, instance["id"], "running")
    [process] = processes_in(live.data_dir(instance))
    credentials = await live.client.get(f"/v1/instances/{instance['id']}/credentials", headers=owner.headers)
    [value] = [c["value"] for c in credentials.json()["values"] if c["name"] == "SESSION_KEY"]
    assert psutil.Process(process.pid).environ()["SESSION_KEY"] == value and len(value) == 24


async def test_a_new_generated_value_leaves_the_values_the_instance_already_has_untouched(
    live: Live, custom_template: str
) -> None:
    owner = await live.signup("Keeps Its Keys Co")
    await live.checkout(owner, "free")
    token = {"name": "SITE_TOKEN", "generate": {"length": 16}, "secret": True}
    await set_spec(live, custom_template, static_site_spec(custom_template, env=[token]))
    instance = await live.ordered(owner, "keeper", template=custom_template)

    async def stored() -> dict[str, str]:
        async with live.container.database.sessionmaker() as session:
            rows = await session.execute(select(StoredSecret.name, StoredSecret.ciphertext).where(
                StoredSecret.owner_id == uuid.UUID(instance["id"])))
            return dict(rows.all())

    before = await stored()
    assert list(before) == ["SITE_TOKEN"]
    session_key = {"name": "SESSION_KEY", "generate": {"length": 24}, "secret": True}
    await set_spec(live, custom_template, static_site_spec(custom_template, env=[token, session_key]))
    await live.reconcile(owner.account_id)
    after = await stored()
    assert set(after) == {"SITE_TOKEN", "SESSION_KEY"}
    assert after["SITE_TOKEN"] == before["SITE_TOKEN"]  # only the missing one is generated
