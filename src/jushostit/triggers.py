"""Every fact change asks for a reconcile of its account; the request is deferred after the commit. Lower
packages (billing, instances, admin) call this module; it only enqueues and never imports the reconciler. It
sits outside `reconcile`, next to `kit`, so the packages the reconciler reads (billing.facts) publish "account
changed" without an import cycle (docs/architecture.md, Package boundaries).

Reconcile jobs carry no procrastinate `lock`: the account's advisory lock (reconcile.repository), taken with a
try-lock on the job's own connection, keeps passes apart and dies with its connection, so no lock outlives a
killed worker. Queueing locks keep at most one waiting job per purpose, each purpose its own, so a pending
retry, a follow-up or a deadline never swallows a fact change (REFERENCE §5). A lost request is healed by the
periodic resync.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from jushostit.kit import jobs

RECONCILE_TASK = "account.reconcile"
# A fact that just changed goes before the periodic work.
FACT_CHANGE_PRIORITY = 10
# A reconcile that finds the account's lock taken (another pass is applying it) looks again this soon: the
# fact that queued it is then seen by a pass that starts after the running one.
BUSY_RETRY_SECONDS = 1


def queueing_lock(account_id: uuid.UUID | str) -> str:
    return f"reconcile:{account_id}"


def request_reconcile(account_id: uuid.UUID) -> None:
    """A fact of the account changed (called inside the unit of work that records it)."""
    jobs.enqueue(
        RECONCILE_TASK, queueing_lock=queueing_lock(account_id), priority=FACT_CHANGE_PRIORITY,
        account_id=str(account_id),
    )


async def _later(account_id: uuid.UUID, purpose: str, *, seconds: float | None = None,
                 at: datetime | None = None, priority: int = 0) -> None:
    await jobs.defer(
        jobs.PendingJob(
            RECONCILE_TASK, {"account_id": str(account_id)}, f"{purpose}:{account_id}", None, priority,
            schedule_in_seconds=seconds, schedule_at=at,
        )
    )


async def when_free(account_id: uuid.UUID) -> None:
    """The account's lock was taken: run again right after the pass holding it (never zero passes)."""
    await _later(account_id, "reconcile-busy", seconds=BUSY_RETRY_SECONDS, priority=FACT_CHANGE_PRIORITY)


async def at_deadline(account_id: uuid.UUID, when: datetime) -> None:
    """A reconcile exactly when time alone changes the account's entitlement (a period ends, a grace runs
    out); one queued job per deadline."""
    await _later(account_id, f"reconcile-at:{int(when.timestamp())}", at=when)


async def follow_up(account_id: uuid.UUID, seconds: float) -> None:
    """Look again soon (an instance is still starting), rather than waiting for the next resync."""
    await _later(account_id, "reconcile-follow-up", seconds=seconds)


async def retry_after_failure(account_id: uuid.UUID, seconds: int) -> None:
    """A pass failed for a reason that may pass (the runtime or the database): try again after a backoff."""
    await _later(account_id, "reconcile-retry", seconds=seconds)
