"""Observed means observed (issue 7 §7): `deleted` is recorded only once the runtime removed the instance, and
the account status shown is derived from the facts at read time (the stored one is a cache the reconciler
rewrites), so a past-due account beyond its grace shows `suspended` with the `billing` hold at once."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import update

from jushostit.kit import context
from jushostit.kit.db import utcnow
from jushostit.models import Account, AccountStatus, BillingMode, Instance, Subscription
from jushostit.reconcile import service
from jushostit.runtime.local.driver import LocalDriver
from jushostit.runtime.protocol import AccountState, Observed, ObservedInstance
from tests.conftest import Signup
from tests.live import Live, processes_in


class RemovalFails:
    """The real local driver, except that removing an instance fails (a runtime that is away)."""

    def __init__(self, inner: LocalDriver) -> None:
        self.inner = inner

    async def remove_instance(self, account_id: uuid.UUID, instance_id: uuid.UUID) -> None:
        raise ConnectionError("the runtime did not answer")

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_deleted_is_recorded_only_after_the_runtime_removed_the_instance(live: Live) -> None:
    owner = await live.signup("Delete Co")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "doomed")
    await live.work()
    await live.until_status(owner, site["id"], "running")
    response = await live.client.request("DELETE", f"/v1/instances/{site['id']}", headers=owner.headers)
    assert response.status_code in {200, 202}, response.text
    c = live.container

    from jushostit.reconcile import service  # the pass itself, with a runtime that cannot remove

    await service.reconcile_account(c.database, c.settings, c.secret_box, RemovalFails(live.driver),
                                    uuid.UUID(owner.account_id))
    row = await live.row(site["id"])
    assert row.deleted_at is None and row.observed_status != "deleted"
    assert live.data_dir(site).exists()
    assert await live.emails_of(owner, "instance_deleted") == []

    await live.reconcile(owner.account_id)  # the runtime answers again
    row = await live.row(site["id"])
    assert row.deleted_at is not None and row.observed_status == "deleted"
    assert not live.instance_dir(site).exists()
    assert len(await live.emails_of(owner, "instance_deleted")) == 1


async def test_the_account_status_shown_is_derived_from_the_facts_at_read_time(live: Live) -> None:
    admin = await live.admin()
    owner = await live.paid_starter(admin, "Late Payer", BillingMode.card)
    site = await live.ordered(owner, "shop")
    await live.work()
    await live.until_status(owner, site["id"], "running")
    async with live.container.database.unit_of_work() as session:  # unpaid for 10 days; card grace is 7
        await session.execute(update(Account).where(Account.id == uuid.UUID(owner.account_id)).values(
            past_due_since=utcnow() - timedelta(days=10), status=AccountStatus.past_due))

    shown = (await live.client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
    assert shown["status"] == "suspended"  # no reconcile ran: derived from the facts, not the stored value
    assert shown["entitlement"]["holds"] == ["billing"] and shown["entitlement"]["level"] == "stopped"
    [listed] = [a for a in (await live.client.get("/v1/admin/accounts", params={"limit": 100},
                                                  headers=admin.headers)).json()["items"]
                if a["id"] == owner.account_id]
    assert listed["status"] == "suspended" and listed["holds"] == ["billing"] and listed["suspension_reasons"] == []

    await live.converge(owner.account_id)  # the reconciler rewrites the stored cache, audited
    async with live.container.database.sessionmaker() as session:
        stored = await session.get(Account, uuid.UUID(owner.account_id))
        assert stored is not None and stored.status == AccountStatus.suspended
    changes = await live.audit("account.status_changed", owner.account_id)
    assert [(c.before, c.after) for c in changes] == [({"status": "past_due"}, {"status": "suspended"})]
    assert (await live.instance(owner, site["id"]))["status"] == "stopped"


class LosesTrackOf:
    """The real local driver, except that its report leaves one instance out (a runtime that lost track of it)."""

    def __init__(self, inner: LocalDriver, lost: uuid.UUID) -> None:
        self.inner, self.lost = inner, lost

    async def apply(self, desired: AccountState) -> Observed:
        observed = await self.inner.apply(desired)
        observed.instances.pop(self.lost, None)
        return observed

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_an_instance_the_runtime_did_not_report_is_failed_not_assumed_running(live: Live) -> None:
    owner = await live.signup("Lost Track Co")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "unreported")
    await live.work()
    await live.until_status(owner, site["id"], "running")
    c = live.container

    observed = await service.reconcile_account(c.database, c.settings, c.secret_box,
                                               LosesTrackOf(live.driver, uuid.UUID(site["id"])),
                                               uuid.UUID(owner.account_id))

    assert observed is not None  # the pass itself went through
    row = await live.row(site["id"])
    assert (row.observed_status, row.status_reason, row.last_error) == ("failed", "not reported by the runtime", None)
    assert (await live.instance(owner, site["id"]))["status"] == "failed"


async def test_an_instance_stopped_because_its_subscription_ended_is_expired_until_a_renewal(live: Live) -> None:
    live.configure(expired_retention_days=7)
    owner = await live.signup("Lapsed Co")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "lapsing")
    await live.work()
    await live.until_status(owner, site["id"], "running")
    ended = utcnow() - timedelta(days=1)  # within the retention period
    async with live.container.database.unit_of_work() as session:
        subscription_id = (await session.execute(
            update(Subscription).where(Subscription.account_id == uuid.UUID(owner.account_id))
            .values(current_period_start=ended - timedelta(days=30), current_period_end=ended)
            .returning(Subscription.id)
        )).scalar_one()

    await live.reconcile(owner.account_id)

    row = await live.row(site["id"])
    assert (row.desired_level, row.observed_status) == ("expired", "expired")
    assert row.status_reason == "subscription ended; data kept for the retention period"
    assert row.expired_at is not None and row.expired_at == row.last_reconciled_at and row.deleted_at is None
    assert processes_in(live.data_dir(site)) == [] and live.data_dir(site).exists()
    assert len(await live.emails_of(owner, "instance_expired")) == 1
    again = await live.reconcile(owner.account_id)  # still expired: nothing to write, expired_at kept
    assert again is not None and again.writes == 0
    assert (await live.row(site["id"])).expired_at == row.expired_at

    renewed = await live.client.post(f"/v1/accounts/{owner.account_id}/subscriptions/{subscription_id}/renew",
                                     headers=owner.headers)
    assert renewed.status_code == 200, renewed.text
    await live.work()
    await live.until_status(owner, site["id"], "running")
    assert (await live.row(site["id"])).expired_at is None  # a running instance has not expired


async def test_a_stopped_instance_records_every_reason_it_is_stopped_for(live: Live) -> None:
    admin = await live.admin()
    owner = await live.signup("Twice Held")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "held")
    await live.work()
    await live.until_status(owner, site["id"], "running")
    for reason in ("admin", "abuse"):
        held = await live.client.post(f"/v1/admin/accounts/{owner.account_id}/suspend", json={"reason": reason},
                                      headers=admin.headers)
        assert held.status_code == 200, held.text

    await live.work()

    body = await live.until_status(owner, site["id"], "stopped")
    assert body["status_reason"] == "suspended: abuse; suspended: admin"


async def test_a_pass_that_deletes_an_instance_still_records_what_it_observed_of_the_others(live: Live) -> None:
    admin = await live.admin()
    owner = await live.paid_starter(admin, "Two Sites Co")
    doomed = await live.ordered(owner, "doomed")  # the older one: first in the pass
    kept = await live.ordered(owner, "kept")
    await live.work()
    for site in (doomed, kept):
        await live.until_status(owner, site["id"], "running")
    async with live.container.database.unit_of_work() as session:  # a stale row: what the pass observes wins
        await session.execute(update(Instance).where(Instance.id == uuid.UUID(kept["id"]))
                              .values(observed_status="failed", status_reason="stale"))
    response = await live.client.delete(f"/v1/instances/{doomed['id']}", headers=owner.headers)
    assert response.status_code == 202, response.text

    await live.reconcile(owner.account_id)

    assert (await live.row(doomed["id"])).observed_status == "deleted"
    row = await live.row(kept["id"])
    assert (row.observed_status, row.status_reason) == ("running", None)


async def _hold_by_hand_then_reconcile_as_the_user(live: Live, owner: Signup) -> None:
    async with live.container.database.unit_of_work() as session:  # an operator's hold, written by hand
        await session.execute(update(Account).where(Account.id == uuid.UUID(owner.account_id))
                              .values(suspension_reasons=["admin"]))
    # Whoever's context a pass runs in (here a user's), its own writes are the system's.
    token = context.actor.set(context.Actor("user", uuid.UUID(owner.user_id)))
    try:
        await live.reconcile(owner.account_id)
    finally:
        context.actor.reset(token)


async def test_the_reconciler_records_an_account_status_change_as_the_system_s_on_that_account(live: Live) -> None:
    owner = await live.signup("Held By Hand")
    await live.checkout(owner, "free")
    await live.work()
    await _hold_by_hand_then_reconcile_as_the_user(live, owner)

    [change] = await live.audit("account.status_changed", owner.account_id)
    assert (change.before, change.after) == ({"status": "active"}, {"status": "suspended"})
    assert (change.actor_type, change.actor_id) == ("system", None)
    assert (change.target_type, change.target_id, str(change.account_id)) == ("account", owner.account_id,
                                                                               owner.account_id)


async def test_the_reconciler_records_an_instance_status_change_as_the_system_s_with_its_reason(
    live: Live,
) -> None:
    owner = await live.signup("Instance Held By Hand")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "held")
    await live.converge(owner.account_id)
    await _hold_by_hand_then_reconcile_as_the_user(live, owner)

    row = await live.row(site["id"])
    assert row.observed_status == "stopped" and row.status_reason
    change = (await live.audit("instance.status_changed", site["id"]))[-1]
    assert (change.before, change.after) == ({"status": "running"}, {"status": "stopped", "reason": row.status_reason})
    assert (change.actor_type, change.actor_id) == ("system", None)
    assert (change.target_type, str(change.account_id)) == ("instance", owner.account_id)


async def test_a_write_back_skips_an_instance_deleted_meanwhile_and_still_records_the_others(live: Live) -> None:
    owner = await live.paid_starter(await live.admin(), "Two Sites")
    first, second = await live.ordered(owner, "first"), await live.ordered(owner, "second")
    await live.converge(owner.account_id)
    c = live.container
    async with c.database.reader() as session:  # facts read before a deletion recorded by another pass
        [snap] = (await service.snapshots(session, c.settings, [uuid.UUID(owner.account_id)], utcnow())).values()
    async with c.database.unit_of_work() as session:
        await session.execute(update(Instance).where(Instance.id == uuid.UUID(first["id"])).values(
            deleted_at=utcnow(), observed_status="deleted"))
    observed = Observed({uuid.UUID(i["id"]): ObservedInstance("stopped") for i in (first, second)})

    await service.write_back(c.database, c.settings, snap, observed, set())

    assert (await live.row(first["id"])).observed_status == "deleted"  # left as the deleting pass recorded it
    assert (await live.row(second["id"])).observed_status == "stopped"  # the next rows are still written


async def test_a_pass_records_its_instances_changes_in_id_order_whatever_order_they_were_stored_in(
    live: Live,
) -> None:
    owner = await live.paid_starter(await live.admin(), "Stored Backwards")
    account_id = uuid.UUID(owner.account_id)
    # Stored largest id first: rows locked in storage order rather than id order would be recorded backwards
    # (and two passes locking overlapping sets in different orders could deadlock).
    ids = [uuid.UUID(f"{first:x}{uuid.uuid4().hex[1:]}") for first in (0xE, 0x2)]
    for n, instance_id in enumerate(ids):
        async with live.container.database.unit_of_work() as session:
            session.add(Instance(id=instance_id, account_id=account_id, template_code="static-site",
                                 name=f"backwards{n}", slug=f"backwards{n}-{uuid.uuid4().hex[:6]}", tier="small",
                                 desired_level="running", observed_status="provisioning"))
    await live.converge(owner.account_id)
    async with live.container.database.unit_of_work() as session:  # an operator's hold: both stop in one pass
        await session.execute(update(Account).where(Account.id == account_id).values(suspension_reasons=["admin"]))

    await live.reconcile(owner.account_id)

    stops = {}
    for instance_id in ids:
        [stop] = [e for e in await live.audit("instance.status_changed", str(instance_id))
                  if e.after["status"] == "stopped"]
        stops[instance_id] = stop.seq
    assert sorted(ids, key=stops.__getitem__) == sorted(ids)
