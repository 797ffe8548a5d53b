"""Metering on the embedded default, for real: a static site served through the local router shows CPU and
network usage through the usage API; a budget driven past 100 % throttles it (still serving), past 120 % suspends
it (reason `budget`), and raising the budget brings it back, with the budget alerts e-mailed once each."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import time_machine

from jushostit.kit.db import utcnow
from jushostit.metering import service
from jushostit.metering.readings import Collected, Metric, Reading, Subject
from jushostit.metering.tasks import aggregate_and_check, collect_local_once
from jushostit.models import MeterCounter, Role
from tests.live import Live, Signup, eventually

PRICED_PLAN = {"included": {"core_hours": "1"}, "unit_price_minor": {"core_hours": "100"}}


async def metered_plan(live: Live, admin: Signup) -> str:
    """A free plan whose usage costs 100 minor units per core-hour beyond the first (a plan of this test's)."""
    code = f"metered-{uuid.uuid4().hex[:8]}"
    response = await live.client.post("/v1/admin/plans", headers=admin.headers, json={
        "code": code, "name": "Metered", "price_minor": 0, "currency": "EUR", "interval": "month",
        "billing_modes": ["free"], "usage_pricing": PRICED_PLAN,
        "quotas": {"cpu_millicores": 500, "memory_mib": 512, "storage_gib": 1, "max_instances": 1},
    })
    assert response.status_code == 201, response.text
    assert response.json()["usage_pricing"]["unit_price_minor"] == {"core_hours": "100"}
    return code


async def usage(live: Live, who: Signup, granularity: str = "day", *, account_id: str | None = None,
                **headers: str) -> dict[str, Any]:
    now = utcnow()
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    response = await live.client.get(
        f"/v1/accounts/{account_id or who.account_id}/usage",
        params={"from": start.isoformat(), "to": (start + timedelta(days=1)).isoformat(), "granularity": granularity},
        headers={**who.headers, **headers})
    assert response.status_code == 200, response.text
    return response.json() if response.headers["content-type"].startswith("application/json") else {"csv": response.text}


async def running_site(live: Live, account_name: str, name: str) -> tuple[Signup, dict[str, Any]]:
    """A static site running on the local runtime, measured every second."""
    live.configure(metering_interval_seconds=1)
    owner = await live.signup(account_name)
    await live.checkout(owner, "free")
    site = await live.ordered(owner, name)
    await live.work()
    await live.until_status(owner, site["id"], "running")
    return owner, site


async def test_a_static_site_serving_requests_shows_cpu_and_network_usage_through_the_usage_api(live: Live) -> None:
    owner, site = await running_site(live, "Measured Co", "measured")
    await eventually(collect_local_once, "a first collection (the counters' baseline)")

    for _ in range(150):  # real requests through the router: CPU in the site's process, bytes both ways
        assert (await live.page(site["slug"])).status_code == 200
    await eventually(collect_local_once, "the next window to be collected")
    await aggregate_and_check()

    body = await usage(live, owner)
    totals, per_instance = body["totals"], body["buckets"][0]["instances"][site["id"]]
    assert Decimal(totals["cpu_core_seconds"]) > 0
    assert Decimal(totals["network_receive_bytes"]) > 150 * 50  # at least each request's head
    assert Decimal(totals["network_transmit_bytes"]) > 0
    assert Decimal(totals["memory_peak_bytes"]) > 1_000_000 and Decimal(totals["storage_byte_seconds"]) > 0
    assert per_instance["network_transmit_bytes"] == totals["network_transmit_bytes"]
    assert body["currency"] == "EUR" and body["cost_minor"] == 0  # the free plan prices nothing

    hourly = await usage(live, owner, "hour")
    assert hourly["cost_minor"] is None and Decimal(hourly["totals"]["cpu_core_seconds"]) > 0
    csv = (await usage(live, owner, Accept="text/csv"))["csv"].splitlines()
    assert csv[0] == "start,end,instance,metric,quantity"
    assert any(f",{site['id']},network_transmit_bytes," in line for line in csv[1:])


async def test_requests_served_before_the_first_collection_that_sees_the_site_are_counted(live: Live) -> None:
    live.configure(metering_interval_seconds=1)
    for _ in range(2):  # two windows before the site exists: the router has been up since before them
        await eventually(collect_local_once, "a collection before the site exists")
    owner, site = await running_site(live, "Early Co", "early")
    for _ in range(20):
        assert (await live.page(site["slug"])).status_code == 200
    async with live.container.database.reader() as session:  # no collection has read the site's counters yet
        assert await session.get(MeterCounter, f"local:{site['id']}:network_receive_bytes") is None
    await eventually(collect_local_once, "the next collection")
    await aggregate_and_check()

    totals = (await usage(live, owner))["totals"]
    assert Decimal(totals["network_receive_bytes"]) >= 20 * 40 and Decimal(totals["network_transmit_bytes"]) > 0


async def test_members_see_usage_and_only_owners_and_admins_see_money(live: Live) -> None:
    owner = await live.signup("Team Co")
    await live.checkout(owner, "free")
    member = await live.add_member(owner, Role.member)
    seen = await usage(live, member, account_id=owner.account_id)
    assert seen["currency"] is None and seen["cost_minor"] is None
    assert (await live.client.get(f"/v1/accounts/{owner.account_id}/spend", headers=member.headers)).status_code == 403
    refused = await live.client.put(f"/v1/accounts/{owner.account_id}/budget", headers=member.headers,
                                    json={"monthly_limit_minor": 100, "currency": "EUR"})
    assert refused.status_code == 403


async def charge(live: Live, who: Signup, instance_id: str, core_seconds: int, at: datetime) -> None:
    """Usage as a collector reports it (a collector run's readings), summed and checked as after every run."""
    account_id = uuid.UUID(who.account_id)
    end = at + timedelta(minutes=5)
    reading = Reading("local", f"local:{instance_id}:cpu:{int(end.timestamp())}:{uuid.uuid4().hex}",
                      Subject(account_id=account_id, instance_id=uuid.UUID(instance_id)), Metric.cpu_core_seconds,
                      at, end, Decimal(core_seconds))
    async with live.container.database.unit_of_work() as session:
        await service.record_collection(session, collector="test", scope=str(account_id), window=(at, end),
                                        collected=Collected([reading], []), started_at=utcnow(), now=utcnow())
    await aggregate_and_check()


async def test_a_budget_throttles_at_100_suspends_at_120_and_a_raised_budget_brings_the_site_back(live: Live) -> None:
    admin = await live.admin()
    owner = await live.signup("Budgeted Co")
    await live.checkout(owner, await metered_plan(live, admin))
    site = await live.ordered(owner, "budgeted")
    await live.converge(owner.account_id)
    set_budget = await live.client.put(f"/v1/accounts/{owner.account_id}/budget", headers=owner.headers,
                                       json={"monthly_limit_minor": 1000, "currency": "EUR"})
    assert set_budget.status_code == 200, set_budget.text
    now = utcnow().replace(minute=0, second=0, microsecond=0)

    await charge(live, owner, site["id"], 3600 * 7, now)  # 6 core-hours over the included one: 600 = 60 %
    await live.converge(owner.account_id)
    assert (await live.row(site["id"])).observed_status == "running"
    await charge(live, owner, site["id"], 3600 * 4, now)  # 1000: 100 %
    await live.converge(owner.account_id)
    row = await live.row(site["id"])
    assert (row.desired_level, row.observed_status) == ("throttled", "throttled")
    assert (await live.page(site["slug"])).status_code == 200  # throttled, still serving

    await charge(live, owner, site["id"], 3600 * 2, now)  # 1200: 120 %
    await live.converge(owner.account_id)
    row = await live.row(site["id"])
    assert (row.desired_level, row.observed_status) == ("stopped", "stopped")
    account = (await live.client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
    assert (account["status"], account["entitlement"]["holds"]) == ("suspended", ["budget"])
    assert account["billing"]["month_spend_minor"] == 1200
    assert (await live.page(site["slug"])).status_code == 503
    spend = (await live.client.get(f"/v1/accounts/{owner.account_id}/spend", headers=owner.headers)).json()
    assert (spend["spent_minor"], spend["budget_percent"], spend["currency"]) == (1200, 120, "EUR")
    assert spend["forecast_minor"] >= 1200

    raised = await live.client.put(f"/v1/accounts/{owner.account_id}/budget", headers=owner.headers,
                                   json={"monthly_limit_minor": 5000, "currency": "EUR"})
    assert raised.status_code == 200
    await live.converge(owner.account_id)
    assert (await live.row(site["id"])).observed_status == "running"
    assert (await live.page(site["slug"])).status_code == 200

    alerts = sorted(int(re.search(r"used (\d+) %", e.subject).group(1)) for e in await live.emails_of(owner, "budget_alert"))
    assert alerts == [50, 100]  # 60 % reached 50; then 100 overtook 75 and 90, each once this month
    [full] = [e for e in await live.emails_of(owner, "budget_alert") if "used 100 %" in e.subject]
    assert "has spent 10.00 EUR on usage this month, 100 % of its monthly budget of 10.00 EUR" in full.body
    await charge(live, owner, site["id"], 1, now)  # below the thresholds of the raised budget: nothing new
    assert len(await live.emails_of(owner, "budget_alert")) == 2


async def test_a_budget_in_another_currency_or_below_zero_is_refused_and_changes_nothing(live: Live) -> None:
    owner = await live.signup("Careful Co")
    await live.checkout(owner, "free")
    path = f"/v1/accounts/{owner.account_id}/budget"
    other = await live.client.put(path, headers=owner.headers, json={"monthly_limit_minor": 100, "currency": "USD"})
    negative = await live.client.put(path, headers=owner.headers, json={"monthly_limit_minor": -1, "currency": "EUR"})
    unknown = await live.client.put(path, headers=owner.headers, json={"monthly_limit_minor": 1, "currency": "XYZ"})
    assert (other.status_code, other.json()["error"]["code"]) == (422, "budget_currency_mismatch")
    assert other.json()["error"]["details"] == {"currency": "EUR"}
    assert negative.status_code == 422 and unknown.status_code == 422
    account = (await live.client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
    assert (account["billing"]["budget_minor"], account["billing"]["budget_currency"]) == (None, None)
    cleared = await live.client.put(path, headers=owner.headers, json={"monthly_limit_minor": None})
    assert cleared.status_code == 200 and cleared.json()["monthly_limit_minor"] is None


async def test_a_new_month_lifts_a_budget_suspension_by_itself(live: Live) -> None:
    admin = await live.admin()
    owner = await live.signup("Month End Co")
    await live.checkout(owner, await metered_plan(live, admin))
    await live.client.put(f"/v1/accounts/{owner.account_id}/budget", headers=owner.headers,
                          json={"monthly_limit_minor": 100, "currency": "EUR"})
    site = await live.ordered(owner, "monthly")
    await live.converge(owner.account_id)
    await charge(live, owner, site["id"], 3600 * 3, utcnow().replace(minute=0, second=0, microsecond=0))
    await live.converge(owner.account_id)
    assert (await live.row(site["id"])).observed_status == "stopped"

    now = utcnow()
    next_month = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, 0, 5, tzinfo=UTC)
    with time_machine.travel(next_month, tick=True):
        await live.converge(owner.account_id)
        assert (await live.row(site["id"])).observed_status == "running"


async def test_checking_out_a_plan_with_a_default_budget_sets_it_and_an_owner_keeps_the_last_word(live: Live) -> None:
    admin = await live.admin()
    owner = await live.paid_starter(admin, "Defaulted Co")  # starter's default budget: 5000 EUR minor units
    account = (await live.client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
    assert (account["billing"]["budget_minor"], account["billing"]["budget_currency"]) == (5000, "EUR")
    lowered = await live.client.put(f"/v1/accounts/{owner.account_id}/budget", headers=owner.headers,
                                    json={"monthly_limit_minor": 700, "currency": "EUR"})
    assert lowered.json()["monthly_limit_minor"] == 700
    entries = await live.audit("account.budget_set", owner.account_id)
    assert sorted((e.after["budget_minor"], e.after.get("from_plan")) for e in entries) == [(700, None),
                                                                                            (5000, "starter")]
