"""Workers never stall the queue (issue 7 §6): emails have a worker of their own, so a sign-in link is
delivered within seconds while every reconcile slot is busy with slow applies; a reconcile never waits for an
account's lock holding a slot (it is queued again instead)."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select

from jushostit.models import EmailOutbox
from jushostit.reconcile import tasks
from jushostit.runtime.local.driver import LocalDriver
from jushostit.runtime.protocol import AccountState, Observed
from jushostit.server import run_worker
from tests.live import Live, eventually

SLOW_APPLY_SECONDS = 3.0  # the fault hook: a runtime that takes seconds per account (a busy cluster)


class SlowDriver:
    def __init__(self, inner: LocalDriver) -> None:
        self.inner = inner
        self.applying = 0
        self.applied = 0

    async def apply(self, desired: AccountState) -> Observed:
        self.applying += 1
        try:
            await asyncio.sleep(SLOW_APPLY_SECONDS)
            return await self.inner.apply(desired)
        finally:
            self.applying -= 1
            self.applied += 1

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_a_sign_in_email_is_delivered_within_seconds_while_twenty_accounts_reconcile_slowly(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    owners = [await live.signup(f"Busy {n}") for n in range(20)]
    for owner in owners:
        await live.checkout(owner, "free")  # each queues a reconcile of its account
    driver = SlowDriver(live.driver)
    monkeypatch.setattr(tasks, "driver_for", lambda settings, database, box: driver)
    worker = asyncio.create_task(run_worker(live.container.settings))
    try:
        await eventually(lambda: driver.applying >= live.container.settings.worker_concurrency,
                         "every reconcile slot to be busy")
        requested = time.monotonic()
        response = await live.client.post("/v1/auth/magic-link", json={"email": owners[-1].email})
        assert response.status_code == 202

        async def delivered() -> EmailOutbox | None:
            async with live.container.database.sessionmaker() as session:
                return await session.scalar(select(EmailOutbox).where(
                    EmailOutbox.to_address == owners[-1].email, EmailOutbox.template == "magic_link",
                    EmailOutbox.status == "sent"))

        await eventually(delivered, "the magic-link email to be sent", timeout=15)
        # Sent while the reconcile backlog (which outranks emails in priority) was still being worked through:
        # on a shared worker it would have waited for all of it.
        assert driver.applied < len(owners) and driver.applying > 0, (driver.applied, driver.applying)
        print(f"\nmagic-link email sent {time.monotonic() - requested:.2f} s after the request, "
              f"{driver.applied} of {len(owners)} slow reconciles done")
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
