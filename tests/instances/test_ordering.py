"""Ordering instances: quotas and entitlement are checked, every refusal is a clear error in the contract's
shape and creates nothing (no instance row, no secrets, no audit entry, no reconcile); a template the local
runtime cannot run is refused at order time (409 `template_unavailable`, marked in the catalog), and one that
exists anyway (ordered before) is reported `failed` — never faked as running."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import func, select

from jushostit.models import AuditEntry, BillingMode, Instance, StoredSecret
from jushostit.runtime.local.driver import NOT_RUNNABLE
from tests.live import Live, Signup, processes_in


async def _footprint(live: Live, who: Signup) -> tuple[int, int, int]:
    """(instances, stored instance secrets, `instance.ordered` audit entries) of the account."""
    account_id = uuid.UUID(who.account_id)
    async with live.container.database.sessionmaker() as session:
        instances = select(Instance.id).where(Instance.account_id == account_id)
        return (
            await session.scalar(select(func.count()).select_from(instances.subquery())),
            await session.scalar(select(func.count()).where(StoredSecret.owner_type == "instance",
                                                            StoredSecret.owner_id.in_(instances))),
            await session.scalar(select(func.count()).where(AuditEntry.action == "instance.ordered",
                                                            AuditEntry.account_id == account_id)),
        )


def _error(response, status: int, code: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    if code:
        assert error["code"] == code, error
    return error


async def test_refused_orders_are_clear_errors_and_create_nothing(live: Live) -> None:
    admin = await live.admin()
    owner = await live.signup("Quota Co")
    nothing = await _footprint(live, owner)
    _error(await live.order(owner, "early"), 409, "not_entitled")  # no subscription yet
    assert await _footprint(live, owner) == nothing == (0, 0, 0)

    await live.checkout(owner, "free")
    await live.ordered(owner, "first")
    await live.work()
    baseline = await _footprint(live, owner)
    assert baseline[0] == 1

    error = _error(await live.order(owner, "second"), 409, "quota_exceeded")
    assert "instances 2 > 1" in error["message"]
    _error(await live.order(owner, "first"), 409, "duplicate_name")
    _error(await live.order(owner, "x", template="no-such-thing"), 404, "unknown_template")
    _error(await live.order(owner, "Upper"), 422)
    _error(await live.order(owner, "-dash"), 422)
    bad_tier = await live.client.post(f"/v1/accounts/{owner.account_id}/instances",
                                      json={"template": "static-site", "name": "tiny", "tier": "huge"},
                                      headers=owner.headers)
    _error(bad_tier, 400, "unknown_tier")
    assert await _footprint(live, owner) == baseline
    assert await live.jobs_of(owner.account_id, "todo") == []  # a refused order requests no reconcile

    suspended = await live.client.post(f"/v1/admin/accounts/{owner.account_id}/suspend", json={"reason": "abuse"},
                                       headers=admin.headers)
    assert suspended.status_code == 200
    # Delete the first instance so that the quota is not what refuses the next order: the hold is.
    assert (await live.client.delete(f"/v1/instances/{(await _instances(live, owner))[0]}",
                                      headers=owner.headers)).status_code == 202
    error = _error(await live.order(owner, "while-held"), 409, "not_entitled")
    assert "suspended: abuse" in error["details"]["reasons"]
    assert await _footprint(live, owner) == baseline


async def _instances(live: Live, who: Signup) -> list[str]:
    response = await live.client.get(f"/v1/accounts/{who.account_id}/instances", headers=who.headers)
    assert response.status_code == 200
    return [i["id"] for i in response.json()["items"]]


async def test_concurrent_orders_never_exceed_the_quota(live: Live) -> None:
    owner = await live.signup("Race Order Co")
    await live.checkout(owner, "free")
    responses = await asyncio.gather(*(live.order(owner, f"rush-{i}") for i in range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409], [r.text for r in responses]
    assert all(r.json()["error"]["code"] == "quota_exceeded" for r in responses if r.status_code == 409)
    assert (await _footprint(live, owner))[0] == 1


async def test_concurrent_orders_with_one_name_create_one_instance(live: Live) -> None:
    owner = await live.signup("Same Name Co")
    await live.set_billing_mode(owner, BillingMode.prepaid)
    admin = await live.admin()
    pending = (await live.checkout(owner, "pro"))["subscription"]
    paid = await live.client.post(f"/v1/admin/subscriptions/{pending['id']}/mark-paid", headers=admin.headers)
    assert paid.status_code == 200
    responses = await asyncio.gather(*(live.order(owner, "twin") for _ in range(3)))
    assert sorted(r.status_code for r in responses) == [201, 409, 409], [r.text for r in responses]
    assert (await _footprint(live, owner))[0] == 1


async def test_a_template_this_runtime_cannot_run_is_refused_at_order_and_counts_nothing(live: Live) -> None:
    owner = await live.signup("Blog Co")
    await live.checkout(owner, "free")  # one instance
    await live.work()

    catalog = {t["code"]: t for t in (await live.client.get("/v1/catalog", params={"limit": 100})).json()["items"]}
    assert catalog["wordpress"]["available"] is False and catalog["wordpress"]["unavailable_reason"] == NOT_RUNNABLE
    for code in ("wordpress", "ghost", "n8n", "browserless"):
        error = _error(await live.order(owner, code, template=code), 409, "template_unavailable")
        assert error["details"] == {"reason": NOT_RUNNABLE} and "cannot run on this server" in error["message"]
    assert await _footprint(live, owner) == (0, 0, 0)  # no row, no secrets, no audit entry
    assert await live.queued(owner.account_id) == 0  # and no reconcile

    # Nothing was counted against the quota: the plan's one instance is still there to order.
    await live.ordered(owner, "site")


async def test_an_instance_whose_template_cannot_run_here_is_reported_failed(live: Live) -> None:
    admin = await live.admin()
    owner = await live.paid_starter(admin, "Blog Co")
    blog = await live.placed(owner, "blog", "wordpress")  # ordered before such orders were refused
    await live.work()
    body = await live.instance(owner, blog["id"])
    assert body["status"] == "failed" and body["status_reason"] == NOT_RUNNABLE
    assert body["desired_level"] == "running" and body["last_reconciled_at"] is not None
    assert (await _footprint(live, owner))[1] > 0  # its generated credentials were stored (encrypted)
    assert (await live.page(blog["slug"])).status_code == 503
    assert not live.instance_dir(blog).exists() and processes_in(live.settings.data_dir) == []
    assert await live.emails_of(owner, "instance_ready") == []
    # A second pass reports the same, and changes nothing.
    observed = await live.reconcile(owner.account_id)
    assert observed is not None and observed.writes == 0
    assert len(await live.audit("instance.status_changed", blog["id"])) == 1
