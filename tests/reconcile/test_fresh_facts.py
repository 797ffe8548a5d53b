"""Nothing irreversible from stale facts (issue 7 §1): the resync reads the facts of a chunk of accounts and
applies them one by one; a renewal committed in between must not let the pass delete the renewed account's
data. Data is deleted only when a fresh read, in the transaction that records the deletion, still says so."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update

from jushostit.kit.db import utcnow
from jushostit.models import Account, Instance, StoredSecret, Subscription
from jushostit.reconcile import service
from jushostit.runtime.local.driver import LocalDriver
from jushostit.runtime.protocol import AccountState, Observed
from jushostit.triggers import queueing_lock
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


async def applied_first_and_lapsed(live: Live, name: str) -> tuple[Signup, Signup, dict[str, Any], str]:
    """Two accounts with a running site each; the second's site holds data and its subscription ended past
    retention. Returns (first, second, second's site, second's subscription id)."""
    first, lapsed = await live.signup("Applied First"), await live.signup(name)
    sites = {}
    for owner in (first, lapsed):
        await live.checkout(owner, "free")
        sites[owner.account_id] = await live.ordered(owner, "kept")
    await live.work()
    site = sites[lapsed.account_id]
    await live.until_status(lapsed, site["id"], "running")
    (live.data_dir(site) / "orders.csv").write_text("a customer's data")
    return first, lapsed, site, await lapse_past_retention(live, lapsed)


async def test_an_account_renewed_while_the_resync_applies_another_keeps_its_data_and_runs(live: Live) -> None:
    first, renewing, site, subscription_id = await applied_first_and_lapsed(live, "Renews Meanwhile")

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


async def test_the_configured_retention_deletes_the_data_and_the_deletion_records_every_reason(live: Live) -> None:
    live.configure(expired_retention_days=7)  # the fresh read before deleting uses it too, not the default 30
    admin = await live.admin()
    owner = await live.signup("Held Then Lapsed")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "lapsed")
    await live.work()
    await live.until_status(owner, site["id"], "running")
    held = await live.client.post(f"/v1/admin/accounts/{owner.account_id}/suspend", json={"reason": "admin"},
                                  headers=admin.headers)
    assert held.status_code == 200, held.text
    await live.work()
    await live.until_status(owner, site["id"], "stopped")
    await lapse_past_retention(live, owner)  # 8 days ago

    observed = await live.reconcile(owner.account_id)

    assert observed is not None and observed.writes == 1  # already stopped: the removal is the one write
    assert not live.instance_dir(site).exists()
    row = await live.row(site["id"])
    assert (row.desired_level, row.observed_status, row.last_error) == ("deleted", "deleted", None)
    assert row.status_reason == "subscription ended and the retention period is over; suspended: admin"
    assert row.deleted_at is not None and row.last_reconciled_at == row.deleted_at
    *_, deleted = await live.audit("instance.status_changed", site["id"])
    assert (deleted.before, deleted.after["status"]) == ({"status": "stopped"}, "deleted")


async def test_a_pass_on_facts_read_before_a_deletion_does_not_delete_again(live: Live) -> None:
    owner = await live.signup("Deleted Once")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "once")
    await live.work()
    await live.until_status(owner, site["id"], "running")
    await lapse_past_retention(live, owner)
    c, account_id = live.container, uuid.UUID(owner.account_id)
    async with c.database.reader() as session:
        stale = (await service.snapshots(session, c.settings, [account_id], utcnow()))[account_id]

    first = await service.converge(c.database, c.settings, c.secret_box, live.driver, stale)
    assert first.writes == 2 and not live.instance_dir(site).exists()  # the process stopped, the data removed
    # The same facts again (read before the deletion, as a pass that read them then would hold them): the
    # fresh read in the deleting transaction finds the instance deleted already.
    second = await service.converge(c.database, c.settings, c.secret_box, live.driver, stale)

    assert second.writes == 0
    statuses = [change.after["status"] for change in await live.audit("instance.status_changed", site["id"])]
    assert statuses.count("deleted") == 1
    assert len(await live.emails_of(owner, "instance_deleted")) == 1


async def test_a_deletion_withdrawn_by_facts_changed_behind_the_api_records_what_it_saw_and_looks_again(
    live: Live,
) -> None:
    first, extended, site, _ = await applied_first_and_lapsed(live, "Extended By Hand")

    async def extend_by_hand() -> None:  # an operator's SQL: a fact change that queues no reconcile itself
        now = utcnow()
        async with live.container.database.unit_of_work() as session:
            await session.execute(update(Subscription).where(Subscription.account_id == uuid.UUID(extended.account_id))
                                  .values(current_period_start=now, current_period_end=now + timedelta(days=30)))

    c = live.container
    driver = RenewsDuringApply(live.driver, uuid.UUID(first.account_id), extend_by_hand)
    ids = [uuid.UUID(first.account_id), uuid.UUID(extended.account_id)]
    await service.reconcile_batch(c.database, c.settings, c.secret_box, driver, ids, deadline_horizon=timedelta(0))

    assert driver.renewed and (live.data_dir(site) / "orders.csv").read_text() == "a customer's data"
    row = await live.row(site["id"])
    assert row.deleted_at is None and row.observed_status == "stopped"  # what the stale pass did, as observed
    # The withdrawn deletion asked for one more pass, which sees the new period.
    assert [job.queueing_lock for job in await live.jobs_of(extended.account_id, "todo")] == [
        queueing_lock(extended.account_id)
    ]
    await live.work()
    await live.until_status(extended, site["id"], "running")
    assert (await live.page(site["slug"], "/orders.csv")).text == "a customer's data"


class RemovesAccountDuringApply:
    """The real local driver; while it applies the account, the account's rows are removed (an operator's SQL)."""

    def __init__(self, inner: LocalDriver, live: Live, account_id: uuid.UUID) -> None:
        self.inner, self.live, self.account_id = inner, live, account_id

    async def apply(self, desired: AccountState) -> Observed:
        async with self.live.container.database.unit_of_work() as session:
            ids = (await session.scalars(select(Instance.id).where(Instance.account_id == self.account_id))).all()
            await session.execute(delete(StoredSecret).where(StoredSecret.owner_type == "instance",
                                                             StoredSecret.owner_id.in_(ids)))
            await session.execute(delete(Account).where(Account.id == self.account_id))  # instances cascade
        return await self.inner.apply(desired)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_an_account_removed_during_its_pass_ends_that_pass_cleanly_and_the_next_removes_its_runtime(
    live: Live,
) -> None:
    owner = await live.signup("Removed By Hand")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "orphan")
    await live.work()
    await live.until_status(owner, site["id"], "running")
    await lapse_past_retention(live, owner)  # the pass would delete the instance, from facts read before
    c, account_id = live.container, uuid.UUID(owner.account_id)

    observed = await service.reconcile_account(c.database, c.settings, c.secret_box,
                                               RemovesAccountDuringApply(live.driver, live, account_id), account_id)

    assert observed is not None  # not a failed pass: the fresh read found nothing left to delete or record
    assert live.data_dir(site).exists()
    assert await live.reconcile(owner.account_id) is None  # the account is gone: its runtime goes with it
    assert not live.driver.account_dir(account_id).exists()
    assert processes_in(live.settings.data_dir) == []
