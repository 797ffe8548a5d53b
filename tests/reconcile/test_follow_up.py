"""A starting instance is looked at again soon, after a short delay (reconcile.service.follow_up_delay), not
polled at once and not left to the resync."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete, text

from jushostit.catalog.loader import load_templates
from jushostit.models import ServiceTemplate
from tests.live import Live

# http.server, answering only after a second: the pass that starts it sees it starting.
SLOW_START = (
    "import runpy, sys, time; time.sleep(1); "
    "sys.argv = ['http.server', '--bind', '{host}', '--directory', '{data_dir}', '{port}']; "
    "runpy.run_module('http.server', run_name='__main__')"
)


@pytest.fixture
async def slow_template(live: Live) -> AsyncIterator[str]:
    [shipped] = [t for t in load_templates() if t.code == "static-site"]
    code = f"slow-{uuid.uuid4().hex[:8]}"
    spec = shipped.model_dump(mode="json", exclude_none=True)
    spec = {**spec, "code": code, "process": {**spec["process"], "command": ["{python}", "-c", SLOW_START]}}
    async with live.container.database.unit_of_work() as session:
        session.add(ServiceTemplate(code=code, kind="app", spec=spec, source="admin"))
    yield code
    async with live.container.database.unit_of_work() as session:
        await session.execute(delete(ServiceTemplate).where(ServiceTemplate.code == code))


async def test_a_starting_instance_is_looked_at_again_after_a_short_delay(live: Live, slow_template: str) -> None:
    owner = await live.signup("Slow Start Co")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "slow", template=slow_template)

    observed = await live.reconcile(owner.account_id)

    assert observed is not None and observed.instances[uuid.UUID(site["id"])].status == "provisioning"
    async with live.container.database.engine.connect() as connection:
        delay = await connection.scalar(text(
            "SELECT extract(epoch FROM j.scheduled_at - e.at) FROM procrastinate_jobs j "
            "JOIN procrastinate_events e ON e.job_id = j.id AND e.type = 'deferred' "
            "WHERE j.status = 'todo' AND j.queueing_lock = :lock"
        ), {"lock": f"reconcile-follow-up:{owner.account_id}"})
    assert delay is not None and 0.2 <= float(delay) <= 30  # a follow-up, delayed (0.25 s for one just started)
    await live.work()
    assert (await live.instance(owner, site["id"]))["status"] == "running"
