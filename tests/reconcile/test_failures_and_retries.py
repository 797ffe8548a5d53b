"""Failures are visible and never delay a fact change (issue 7 §3, §4): a pass that fails is logged, counted in
/metrics, recorded for admins (customers get a safe note) and retried with a backoff on a queueing lock of its
own, so a payment or an unsuspend that arrives meanwhile is applied at once; deadlines are scheduled whether
the pass succeeded or not; permanent problems are not retried."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jushostit.kit.db import utcnow
from jushostit.reconcile import service, tasks
from jushostit.runtime.local.driver import LocalDriver
from jushostit.runtime.protocol import AccountState, Observed, ObservedInstance
from tests.conftest import Signup
from tests.live import Live

CLUSTER_ERROR = "cluster unreachable: https://10.0.0.5:6443"


class FailingFor:
    """The real local driver, except that applying the accounts in `failing` raises, as an unreachable runtime."""

    def __init__(self, inner: LocalDriver, *failing: uuid.UUID, error: str = CLUSTER_ERROR) -> None:
        self.inner = inner
        self.failing = set(failing)
        self.error = error

    async def apply(self, desired: AccountState) -> Observed:
        if desired.account_id in self.failing:
            raise ConnectionError(self.error)
        return await self.inner.apply(desired)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def failures_counted(live: Live, path: str) -> float:
    text = (await live.client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "jushostit_reconcile_failures_total" and sample.labels.get("path") == path:
                return sample.value
    return 0.0


async def test_a_fact_change_is_applied_while_a_failed_pass_waits_for_its_retry(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await live.admin()
    owner = await live.signup("Flaky Runtime")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "flaky")
    await live.work()
    await live.until_status(owner, site["id"], "running")
    account_id = uuid.UUID(owner.account_id)
    driver = FailingFor(live.driver, account_id)
    monkeypatch.setattr(tasks, "driver_for", lambda settings, database, box: driver)

    suspend = await live.client.post(f"/v1/admin/accounts/{owner.account_id}/suspend", json={"reason": "abuse"},
                                     headers=admin.headers)
    assert suspend.status_code == 200
    await live.work()  # the pass fails: recorded, retried later
    [(retry_at, retry_lock)] = [s for s in await live.scheduled_of(owner.account_id)
                                if s[1].startswith("reconcile-retry:")]
    assert retry_lock == f"reconcile-retry:{account_id}"

    driver.failing.clear()  # the runtime is back; the retry still waits for its backoff
    lifted = await live.client.post(f"/v1/admin/accounts/{owner.account_id}/unsuspend", json={"reason": "abuse"},
                                    headers=admin.headers)
    assert lifted.status_code == 200
    assert len(await live.jobs_of(owner.account_id, "todo")) == 1  # queued now, not folded into the retry
    await live.work()
    body = await live.until_status(owner, site["id"], "running", timeout=10)
    assert body["last_error"] is None
    assert retry_at in [s[0] for s in await live.scheduled_of(owner.account_id)]  # its backoff had not run out


async def test_a_failing_account_is_logged_counted_and_shown_to_admins_only(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await live.admin()
    failing, healthy = await live.signup("Failing Co"), await live.signup("Healthy Co")
    sites = {}
    for owner in (failing, healthy):
        await live.checkout(owner, "free")
        sites[owner.account_id] = await live.ordered(owner, "site")
    driver = FailingFor(live.driver, uuid.UUID(failing.account_id))
    before = await failures_counted(live, "resync")
    c = live.container

    with caplog.at_level(logging.ERROR):
        await service.reconcile_batch(c.database, c.settings, c.secret_box, driver,
                                      [uuid.UUID(failing.account_id), uuid.UUID(healthy.account_id)],
                                      deadline_horizon=timedelta(0))

    assert any("reconcile.account_failed" in r.getMessage() and failing.account_id in r.getMessage()
               and CLUSTER_ERROR in r.getMessage() for r in caplog.records)
    assert await failures_counted(live, "resync") == before + 1
    listed = await live.client.get("/v1/admin/accounts", params={"failing": "true", "limit": 100},
                                   headers=admin.headers)
    [shown] = [a for a in listed.json()["items"] if a["id"] == failing.account_id]
    assert CLUSTER_ERROR in shown["reconcile_error"] and shown["reconcile_failures"] == 1
    assert healthy.account_id not in [a["id"] for a in listed.json()["items"]]
    assert f"reconcile-retry:{failing.account_id}" in [s[1] for s in await live.scheduled_of(failing.account_id)]

    # The sibling account in the same chunk converged; the customer of the failing one sees no internals.
    await live.converge(healthy.account_id)
    assert (await live.instance(healthy, sites[healthy.account_id]["id"]))["status"] == "running"
    customer_view = (await live.client.get(f"/v1/accounts/{failing.account_id}", headers=failing.headers)).text
    customer_view += (await live.client.get(f"/v1/instances/{sites[failing.account_id]['id']}",
                                            headers=failing.headers)).text
    assert "10.0.0.5" not in customer_view and "ConnectionError" not in customer_view

    # The next pass that succeeds clears the admin's view.
    await live.converge(failing.account_id)
    listed = await live.client.get("/v1/admin/accounts", params={"failing": "true", "limit": 100},
                                   headers=admin.headers)
    assert failing.account_id not in [a["id"] for a in listed.json()["items"]]


async def test_deadlines_are_scheduled_even_when_the_pass_fails(live: Live) -> None:
    owner = await live.signup("Deadline Despite Failure")
    checkout = await live.checkout(owner, "free")
    await live.ordered(owner, "site")
    driver = FailingFor(live.driver, uuid.UUID(owner.account_id))
    c = live.container

    await service.reconcile_account(c.database, c.settings, c.secret_box, driver, uuid.UUID(owner.account_id))
    period_end = checkout["subscription"]["current_period_end"]
    deadlines = [s for s in await live.scheduled_of(owner.account_id) if s[1].startswith("reconcile-at:")]
    assert [s[0].isoformat() for s in deadlines] == [period_end.replace("Z", "+00:00")]

    async with c.database.autocommit.connect() as connection:  # the resync path schedules them too
        await connection.exec_driver_sql(
            "DELETE FROM procrastinate_jobs WHERE queueing_lock LIKE 'reconcile-at:%%' AND args->>'account_id' = %s",
            (owner.account_id,),
        )
    await service.reconcile_batch(c.database, c.settings, c.secret_box, driver, [uuid.UUID(owner.account_id)],
                                  deadline_horizon=timedelta(days=60))
    assert [s[1] for s in await live.scheduled_of(owner.account_id) if s[1].startswith("reconcile-at:")]


async def test_a_permanent_problem_is_recorded_and_not_retried(live: Live) -> None:
    owner = await live.paid_starter(await live.admin(), "Not Runnable Here")
    blog = await live.placed(owner, "blog", "wordpress")  # no local process form (ordered before that was refused)
    await live.work()
    body = await live.until_status(owner, blog["id"], "failed")
    assert body["status_reason"] == "template not runnable on the local runtime" and body["last_error"] is None
    assert not [s for s in await live.scheduled_of(owner.account_id) if s[1].startswith("reconcile-retry:")]


class RefusesOne:
    """The real local driver, except that the runtime reports an error for one instance (a deployment refused)."""

    def __init__(self, inner: LocalDriver, refused: uuid.UUID) -> None:
        self.inner, self.refused = inner, refused
        self.refusing = True

    async def apply(self, desired: AccountState) -> Observed:
        observed = await self.inner.apply(desired)
        if self.refusing:
            observed.instances[self.refused] = ObservedInstance(
                "failed", "the runtime could not apply it", error="ConnectionError: deployment refused"
            )
        return observed

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_an_instance_counts_its_failed_passes_in_a_row_and_back_to_zero_once_applied(live: Live) -> None:
    owner = await live.signup("Refused Co")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "refused")
    await live.work()
    await live.until_status(owner, site["id"], "running")
    assert (await live.row(site["id"])).failures == 0
    c, account_id = live.container, uuid.UUID(owner.account_id)
    driver = RefusesOne(live.driver, uuid.UUID(site["id"]))
    counted = await failures_counted(live, "job")

    for _ in range(2):
        await service.reconcile_account(c.database, c.settings, c.secret_box, driver, account_id)

    # Counted in /metrics under the path that ran the pass, as a pass that fails as a whole is.
    assert await failures_counted(live, "job") == counted + 2
    row = await live.row(site["id"])
    assert (row.observed_status, row.last_error, row.failures) == ("failed", "ConnectionError: deployment refused", 2)
    driver.refusing = False
    await service.reconcile_account(c.database, c.settings, c.secret_box, driver, account_id)
    row = await live.row(site["id"])
    assert (row.observed_status, row.last_error, row.failures) == ("running", None, 0)


async def shown_to_admins(live: Live, admin: Signup, account_id: str) -> dict[str, Any]:
    """The account as platform admins list it (every page walked)."""
    params: dict[str, Any] = {"limit": 100}
    while True:
        listed = await live.client.get("/v1/admin/accounts", params=params, headers=admin.headers)
        assert listed.status_code == 200, listed.text
        for shown in listed.json()["items"]:
            if shown["id"] == account_id:
                return dict(shown)
        assert listed.json()["next_cursor"], f"account {account_id} not listed"
        params["cursor"] = listed.json()["next_cursor"]


async def test_the_recorded_error_names_its_type_keeps_2000_characters_and_when_it_happened(live: Live) -> None:
    admin = await live.admin()
    owner = await live.signup("Long Error Co")
    await live.checkout(owner, "free")
    text = "cluster unreachable: " + "x" * 3000  # a runtime's error can be as long as it likes
    driver = FailingFor(live.driver, uuid.UUID(owner.account_id), error=text)
    c = live.container

    before = utcnow()
    await service.reconcile_account(c.database, c.settings, c.secret_box, driver, uuid.UUID(owner.account_id))
    after = utcnow()

    shown = await shown_to_admins(live, admin, owner.account_id)
    assert shown["reconcile_error"] == f"ConnectionError: {text}"[:2000]
    assert shown["reconcile_error_at"] is not None
    assert before <= datetime.fromisoformat(shown["reconcile_error_at"]) <= after
    assert shown["reconcile_failures"] == 1


async def fail_and_measure_the_retry(live: Live, driver: FailingFor, account_id: uuid.UUID) -> tuple[float, float]:
    """One failing pass; returns the bounds of its retry's backoff (seconds from before/after the pass to the
    retry's time), then takes the retry off the queue as a worker picking it up would (freeing its lock)."""
    c = live.container
    before = utcnow()
    await service.reconcile_account(c.database, c.settings, c.secret_box, driver, account_id)
    after = utcnow()
    [retry_at] = [at for at, lock in await live.scheduled_of(str(account_id)) if lock.startswith("reconcile-retry:")]
    async with c.database.autocommit.connect() as connection:
        await connection.exec_driver_sql(
            "DELETE FROM procrastinate_jobs WHERE queueing_lock = %s", (f"reconcile-retry:{account_id}",)
        )
    return (retry_at - after).total_seconds(), (retry_at - before).total_seconds()


def assert_backoff(bounds: tuple[float, float], seconds: int) -> None:
    assert bounds[0] <= seconds <= bounds[1], f"retried after {bounds}, not {seconds} s"


async def test_the_retry_backoff_doubles_from_two_seconds_with_each_failure_in_a_row_up_to_five_minutes(
    live: Live,
) -> None:
    owner = await live.signup("Backoff Co")
    await live.checkout(owner, "free")
    account_id = uuid.UUID(owner.account_id)
    driver = FailingFor(live.driver, account_id)

    for expected in (2, 4, 8, 16, 32, 64, 128, 256, 300, 300):
        assert_backoff(await fail_and_measure_the_retry(live, driver, account_id), expected)


async def test_a_pass_that_succeeds_clears_the_error_and_the_count_so_the_next_failure_backs_off_two_seconds(
    live: Live,
) -> None:
    admin = await live.admin()
    owner = await live.signup("Recovered Co")
    await live.checkout(owner, "free")
    account_id = uuid.UUID(owner.account_id)
    driver = FailingFor(live.driver, account_id)
    for _ in range(3):
        await fail_and_measure_the_retry(live, driver, account_id)
    assert (await shown_to_admins(live, admin, owner.account_id))["reconcile_failures"] == 3

    driver.failing.clear()
    c = live.container
    await service.reconcile_account(c.database, c.settings, c.secret_box, driver, account_id)
    shown = await shown_to_admins(live, admin, owner.account_id)
    assert (shown["reconcile_error"], shown["reconcile_failures"]) == (None, 0)

    driver.failing.add(account_id)
    assert_backoff(await fail_and_measure_the_retry(live, driver, account_id), 2)


class RefusesEach:
    """The real local driver, except that the runtime reports an error of its own for each of `refused`."""

    def __init__(self, inner: LocalDriver, refused: dict[uuid.UUID, str]) -> None:
        self.inner, self.refused = inner, refused

    async def apply(self, desired: AccountState) -> Observed:
        observed = await self.inner.apply(desired)
        for instance_id, error in self.refused.items():
            observed.instances[instance_id] = ObservedInstance("failed", "the runtime could not apply it", error=error)
        return observed

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_the_account_error_names_every_instance_the_runtime_refused(live: Live) -> None:
    admin = await live.admin()
    owner = await live.paid_starter(admin, "Two Refused")
    sites = [await live.ordered(owner, name) for name in ("first", "second")]
    errors = {uuid.UUID(site["id"]): f"ConnectionError: deployment {site['name']} refused" for site in sites}
    c = live.container

    await service.reconcile_account(c.database, c.settings, c.secret_box, RefusesEach(live.driver, errors),
                                    uuid.UUID(owner.account_id))

    shown = (await shown_to_admins(live, admin, owner.account_id))["reconcile_error"]
    prefix = "InstancesFailed: 2 instance(s) failed: "
    assert shown.startswith(prefix), shown
    assert sorted(shown.removeprefix(prefix).split("; ")) == sorted(errors.values())


async def passes_counted(live: Live, path: str) -> float:
    text = (await live.client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "jushostit_reconcile_passes_total" and sample.labels.get("path") == path:
                return sample.value
    return 0.0


async def test_every_pass_is_counted_under_the_path_that_ran_it(live: Live) -> None:
    owner = await live.signup("Counted Co")
    await live.checkout(owner, "free")
    account_id = uuid.UUID(owner.account_id)
    c = live.container
    before = {path: await passes_counted(live, path) for path in ("job", "resync")}

    await service.reconcile_account(c.database, c.settings, c.secret_box, live.driver, account_id)
    assert {path: await passes_counted(live, path) for path in before} == {"job": before["job"] + 1,
                                                                            "resync": before["resync"]}
    await service.reconcile_batch(c.database, c.settings, c.secret_box, live.driver, [account_id],
                                  deadline_horizon=timedelta(0))
    assert {path: await passes_counted(live, path) for path in before} == {"job": before["job"] + 1,
                                                                            "resync": before["resync"] + 1}
