"""Every fact change asks for a reconcile of its account; the request is deferred after the commit.

One queued and one running per account (REFERENCE §5): a fact that arrives while a reconcile runs queues
exactly one more, which sees the new fact. A lost request is healed by the periodic resync.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from jushostit.kit import jobs

RECONCILE_TASK = "account.reconcile"
# A fact that just changed goes before the periodic resync's sweep of every account.
FACT_CHANGE_PRIORITY = 10


def queueing_lock(account_id: uuid.UUID | str) -> str:
    return f"reconcile:{account_id}"


def running_lock(account_id: uuid.UUID | str) -> str:
    return f"account:{account_id}"


def request_reconcile(account_id: uuid.UUID) -> None:
    jobs.enqueue(
        RECONCILE_TASK,
        queueing_lock=queueing_lock(account_id),
        lock=running_lock(account_id),
        priority=FACT_CHANGE_PRIORITY,
        account_id=str(account_id),
    )


FOLLOW_UP_SECONDS = 5
# SCHEDULED_WITHOUT_LOCK: procrastinate holds back every later job with the same `lock` while an earlier one
# waits in `todo`, even one scheduled for next month. Jobs scheduled for later therefore carry no procrastinate
# lock; the reconcile itself takes the account's advisory lock (ReconcileLocks), which is what keeps passes apart.


async def at_deadline(account_id: uuid.UUID, when: datetime) -> None:
    """A reconcile exactly when time alone changes the account's entitlement (a period ends, a grace runs
    out). Its own queueing lock per deadline, so it never blocks the immediate reconciles of fact changes."""
    await jobs.defer(
        jobs.PendingJob(
            RECONCILE_TASK,
            {"account_id": str(account_id)},
            f"reconcile-at:{account_id}:{int(when.timestamp())}",
            None,  # see SCHEDULED_WITHOUT_LOCK
            schedule_at=when,
        )
    )


async def follow_up(account_id: uuid.UUID) -> None:
    """Look again soon (an instance is still starting), rather than waiting for the next resync."""
    await jobs.defer(
        jobs.PendingJob(
            RECONCILE_TASK,
            {"account_id": str(account_id)},
            queueing_lock(account_id),
            None,  # see SCHEDULED_WITHOUT_LOCK
            FACT_CHANGE_PRIORITY,
            schedule_in_seconds=FOLLOW_UP_SECONDS,
        )
    )
