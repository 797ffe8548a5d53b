"""A reconcile is scheduled exactly at the next instant time alone changes the entitlement (DESIGN §8:
an exact job at each deadline; the resync is the safety net), without blocking immediate reconciles."""

from __future__ import annotations

from datetime import datetime

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
