"""A prepaid contract's end stops a running service, and an operator's extension brings it back, end to end: a
corporate sign-up against the HubSpot stand-in, a plan the contract pays, a real instance process, the reconciler
woken at the contract's end by its deadline job, and the hourly job renewing what the contract pays."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import time_machine

from jushostit.billing.periods import add_months
from jushostit.billing.tasks import renew_contract_periods
from tests.conftest import TEST_PASSWORD, Signup, committed_email_reader, complete_sign_up
from tests.hubspot_stand_in import HubSpotServer, hubspot, hubspot_server, hubspot_settings
from tests.live import Live

__all__ = ["hubspot", "hubspot_server"]  # fixtures


async def _corporate_signup(live: Live, deal_id: str) -> Signup:
    email = f"live-corp-{uuid.uuid4().hex[:8]}@corp.example"
    response = await live.client.post("/v1/auth/signup", json={
        "email": email, "password": TEST_PASSWORD, "account_name": "Corp Live", "corporate_ref": deal_id})
    assert response.status_code == 202, response.text
    who = await complete_sign_up(live.client, committed_email_reader(live.container), email)
    live.accounts.add(uuid.UUID(who.account_id))
    live.users.add(uuid.UUID(who.user_id))
    live.emails.add(email)
    return who


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_the_contract_end_stops_the_service_and_an_extension_restores_it(
    live: Live, hubspot, hubspot_server: HubSpotServer
) -> None:
    live.configure(**hubspot_settings(hubspot_server))
    admin = await live.admin()
    ends = (datetime.now(UTC) + timedelta(days=10)).date()
    owner = await _corporate_signup(live, hubspot.deal("closedwon", contract_end_date=ends.isoformat()))
    contract_ends = _at((await live.client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers))
                        .json()["billing"]["contract_ends_at"])
    subscription = (await live.checkout(owner, "starter"))["subscription"]
    assert subscription["provider"] == "contract" and subscription["status"] == "active"
    instance = await live.ordered(owner, "corp")
    await live.converge(owner.account_id)
    assert (await live.instance(owner, instance["id"]))["status"] == "running"
    # The pass scheduled a reconcile exactly at the contract's end.
    deadline = (contract_ends, f"reconcile-at:{int(contract_ends.timestamp())}:{owner.account_id}")
    assert deadline in [tuple(row) for row in await live.scheduled_of(owner.account_id)]

    with time_machine.travel(contract_ends + timedelta(minutes=1)):
        headers = await live.login(owner)
        await live.converge(owner.account_id)
        held = (await live.client.get(f"/v1/accounts/{owner.account_id}", headers=headers)).json()
        assert held["status"] == "suspended" and held["entitlement"]["holds"] == ["contract"]
        assert held["entitlement"]["level"] == "stopped"
        assert held["entitlement"]["warning_banner"].startswith("The contract ended on ")
        stopped = await live.instance(headers, instance["id"])
        assert stopped["status"] == "stopped" and "suspended: contract" in stopped["status_reason"]
        assert (await live.page(instance["slug"])).status_code == 503

        extended = await live.client.put(
            f"/v1/admin/accounts/{owner.account_id}/contract",
            json={"ends_at": (contract_ends + timedelta(days=365)).isoformat()}, headers=await live.login(admin))
        assert extended.status_code == 200, extended.text
        assert extended.json()["holds"] == [] and extended.json()["level"] == "running"
        await live.work()  # the reconcile the extension queued
        await live.converge(owner.account_id)
        assert (await live.instance(headers, instance["id"]))["status"] == "running"
        assert (await live.page(instance["slug"])).status_code == 200


async def test_the_hourly_job_renews_the_periods_a_running_contract_pays(
    live: Live, hubspot, hubspot_server: HubSpotServer
) -> None:
    live.configure(**hubspot_settings(hubspot_server))
    ends = (datetime.now(UTC) + timedelta(days=100)).date()
    owner = await _corporate_signup(live, hubspot.deal("closedwon", contract_end_date=ends.isoformat()))
    subscription = (await live.checkout(owner, "starter"))["subscription"]
    period_end = _at(subscription["current_period_end"])

    with time_machine.travel(period_end - timedelta(hours=2)):
        assert await renew_contract_periods() >= 1
        assert await renew_contract_periods() == 0  # renewed once
        headers = await live.login(owner)
        listed = await live.client.get(f"/v1/accounts/{owner.account_id}/subscriptions", headers=headers)
    [renewed] = listed.json()["items"]
    start = _at(subscription["current_period_start"])
    assert _at(renewed["current_period_end"]) == add_months(start, 2, anchor_day=start.day)
