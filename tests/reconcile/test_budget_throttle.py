"""A monthly budget reached throttles the account's instances in place (same process, lower CPU priority, still
serving); well over it they stop (hold `budget`); back under it they run at full priority again. The level is
the entitlement's (tests/entitlement); this is what the reconciler and the runtime make of it."""

from __future__ import annotations

import uuid

from sqlalchemy import update

from jushostit.models import Account
from tests.live import Live, Signup, processes_in
from tests.metering.helpers import charged


async def spend(live: Live, owner: Signup, spent_minor: int, limit_minor: int = 10_000) -> None:
    async with live.container.database.unit_of_work() as session:  # as metering's aggregation records it
        await session.execute(update(Account).where(Account.id == uuid.UUID(owner.account_id))
                              .values(budget_minor=limit_minor))
        await charged(session, owner.account_id, spent_minor)


async def test_a_budget_reached_throttles_the_running_process_in_place_and_lifting_it_restores_priority(
    live: Live,
) -> None:
    owner = await live.signup("Metered Co")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "metered")
    await live.work()
    await live.until_status(owner, site["id"], "running")
    [process] = processes_in(live.data_dir(site))
    assert process.nice() == 0

    await spend(live, owner, 10_000)  # 100 % of the budget
    throttled = await live.reconcile(owner.account_id)

    assert throttled is not None and throttled.writes == 1  # reniced, not restarted
    assert processes_in(live.data_dir(site)) == [process] and process.nice() > 0
    row = await live.row(site["id"])
    assert (row.desired_level, row.observed_status) == ("throttled", "throttled")
    assert row.status_reason == "monthly budget reached (100%)"
    assert (await live.page(site["slug"])).status_code == 200

    await spend(live, owner, 12_000)  # 120 %: held
    await live.reconcile(owner.account_id)
    assert processes_in(live.data_dir(site)) == []
    assert (await live.row(site["id"])).observed_status == "stopped"

    await spend(live, owner, 5_000)
    await live.converge(owner.account_id)
    [again] = processes_in(live.data_dir(site))
    assert again.nice() == 0
    assert (await live.row(site["id"])).observed_status == "running"
    assert (await live.page(site["slug"])).status_code == 200
