"""Nothing irreversible from stale facts (issue 7 §1): the resync reads the facts of a chunk of accounts and
applies them one by one; a renewal committed in between must not let the pass delete the renewed account's
data. Data is deleted only when a fresh read, in the transaction that records the deletion, still says so."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import update

from jushostit.kit.db import utcnow
from jushostit.models import Subscription
from jushostit.reconcile import service
from jushostit.runtime.local.driver import LocalDriver
from jushostit.runtime.protocol import AccountState, Observed
from tests.live import Live, Signup, processes_in


class RenewsDuringApply:
    """The real local driver; while it applies `first`, the owner of `other` renews (a commit in between)."""

    def __init__(self, inner: LocalDriver, first: uuid.UUID, renew) -> None:  # noqa: ANN001 - a coroutine factory
        self.inner, self.first, self.renew = inner, first, renew
        self.renewed = False

    async def apply(self, desired: AccountState) -> Observed:
        if desired.account_id == self.first and not self.renewed:
            self.renewed = True
            await self.renew()
        return await self.inner.apply(desired)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def lapse_past_retention(live: Live, owner: Signup) -> str:
    """The owner's free subscription ended longer ago than the retention period; returns its id."""
    ended = utcnow() - timedelta(days=live.settings.expired_retention_days + 1)
    async with live.container.database.unit_of_work() as session:
        subscription = (await session.execute(
            update(Subscription).where(Subscription.account_id == uuid.UUID(owner.account_id))
            .values(current_period_start=ended - timedelta(days=30), current_period_end=ended)
            .returning(Subscription.id)
        )).scalar_one()
    return str(subscription)


async def test_an_account_renewed_while_the_resync_applies_another_keeps_its_data_and_runs(live: Live) -> None:
    first, renewing = await live.signup("Applied First"), await live.signup("Renews Meanwhile")
    sites = {}
    for owner in (first, renewing):
        await live.checkout(owner, "free")
        sites[owner.account_id] = await live.ordered(owner, "keeper")
    await live.work()
    site = sites[renewing.account_id]
    await live.until_status(renewing, site["id"], "running")
    (live.data_dir(site) / "orders.csv").write_text("a customer's data")
    subscription_id = await lapse_past_retention(live, renewing)

    async def renew() -> None:
        response = await live.client.post(
            f"/v1/accounts/{renewing.account_id}/subscriptions/{subscription_id}/renew", headers=renewing.headers
        )
        assert response.status_code == 200, response.text

    c = live.container
    driver = RenewsDuringApply(live.driver, uuid.UUID(first.account_id), renew)
    ids = [uuid.UUID(first.account_id), uuid.UUID(renewing.account_id)]  # applied in this order
    await service.reconcile_batch(c.database, c.settings, c.secret_box, driver, ids, deadline_horizon=timedelta(0))

    assert driver.renewed
    assert (live.data_dir(site) / "orders.csv").read_text() == "a customer's data"  # not deleted
    row = await live.row(site["id"])
    assert row.deleted_at is None and row.observed_status != "deleted"
    assert "deleted" not in [c.after["status"] for c in await live.audit("instance.status_changed", site["id"])]

    await live.work()  # the renewal's own reconcile: it waited for the chunk, then saw the new period
    body = await live.until_status(renewing, site["id"], "running")
    assert body["delete_requested_at"] is None
    assert (await live.page(site["slug"], "/orders.csv")).text == "a customer's data"
    assert len(processes_in(live.data_dir(site))) == 1


async def test_past_retention_the_data_is_deleted_and_recorded_in_one_step(live: Live) -> None:
    owner = await live.signup("Lapsed For Good")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "gone")
    await live.work()
    await live.until_status(owner, site["id"], "running")
    await lapse_past_retention(live, owner)

    await live.reconcile(owner.account_id)

    assert not live.instance_dir(site).exists()
    row = await live.row(site["id"])
    assert row.deleted_at is not None and row.observed_status == "deleted"
    assert [c.after["status"] for c in await live.audit("instance.status_changed", site["id"])][-1] == "deleted"
    assert len(await live.emails_of(owner, "instance_deleted")) == 1
