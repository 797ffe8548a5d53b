"""A reconcile is scheduled exactly at the next instant time alone changes the entitlement (DESIGN §8:
an exact job at each deadline; the resync is the safety net), without blocking immediate reconciles."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import update

from jushostit.kit.db import utcnow
from jushostit.models import Instance, Subscription
from jushostit.reconcile.tasks import resync_all
from tests.live import Live


async def test_the_period_end_gets_an_exact_reconcile(live: Live) -> None:
    owner = await live.signup("Deadline Co")
    checkout = await live.checkout(owner, "free")
    await live.work()
    period_end = datetime.fromisoformat(checkout["subscription"]["current_period_end"])
    [(scheduled_at, queueing_lock)] = await live.scheduled_of(owner.account_id)
    assert scheduled_at == period_end
    assert queueing_lock == f"reconcile-at:{int(period_end.timestamp())}:{owner.account_id}"
    # It does not hold the account's queueing lock: a fact change still queues a reconcile right away.
    await live.ordered(owner, "site")
    assert len(await live.jobs_of(owner.account_id, "todo")) == 1
    await live.work()
    assert len(await live.scheduled_of(owner.account_id)) == 1  # the same deadline is queued once


async def test_the_resync_schedules_the_deadlines_within_two_intervals_and_leaves_the_later_ones(live: Live) -> None:
    live.configure(resync_interval_seconds=60)  # deadlines up to 120 s ahead get their exact job now
    soon, later = await live.signup("Ends Soon"), await live.signup("Ends Later")
    for owner in (soon, later):
        await live.checkout(owner, "free")
    await live.work()
    now = utcnow().replace(microsecond=0)
    ends = {soon.account_id: now + timedelta(seconds=90), later.account_id: now + timedelta(seconds=150)}
    async with live.container.database.unit_of_work() as session:  # written behind the API: no reconcile queued
        for account_id, end in ends.items():
            await session.execute(update(Subscription).where(Subscription.account_id == uuid.UUID(account_id))
                                  .values(current_period_end=end))

    assert await resync_all() is not None

    def exact(account_id: str) -> str:
        return f"reconcile-at:{int(ends[account_id].timestamp())}:{account_id}"

    assert (ends[soon.account_id], exact(soon.account_id)) in await live.scheduled_of(soon.account_id)
    # Beyond two intervals: a later resync schedules it (the one before it is within the horizon).
    assert exact(later.account_id) not in [lock for _, lock in await live.scheduled_of(later.account_id)]


async def test_a_scheduled_deletion_gets_an_exact_reconcile_at_its_instant(live: Live) -> None:
    owner = await live.signup("Deletes Later")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "later")
    await live.work()
    at = utcnow().replace(microsecond=0) + timedelta(hours=1)  # well before the period ends
    async with live.container.database.unit_of_work() as session:  # an operator's scheduled deletion
        await session.execute(update(Instance).where(Instance.id == uuid.UUID(site["id"]))
                              .values(delete_requested_at=at))

    await live.reconcile(owner.account_id)

    assert (at, f"reconcile-at:{int(at.timestamp())}:{owner.account_id}") in await live.scheduled_of(owner.account_id)
