"""The entitlement inputs loaded for one account (billing.facts), seen through GET /v1/accounts/{id}, and the
period arithmetic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from jushostit.billing.facts import dunning_policy, load_entitlement_inputs
from jushostit.billing.periods import add_months, period_end
from jushostit.entitlement import Level, Quotas
from jushostit.models import Account, AccountStatus, BillingMode
from tests.metering.helpers import charged


async def _entitlement(client, who) -> dict:
    response = await client.get(f"/v1/accounts/{who.account_id}", headers=who.headers)
    assert response.status_code == 200, response.text
    return response.json()["entitlement"]


async def _with_free_plan(client, session, who, **facts) -> Account:
    response = await client.post(f"/v1/accounts/{who.account_id}/checkout", json={"plan": "free"},
                                 headers=who.headers)
    assert response.status_code == 201, response.text
    account = await session.get(Account, uuid.UUID(who.account_id))
    for name, value in facts.items():
        setattr(account, name, value)
    await session.flush()
    return account


async def test_the_loader_returns_what_the_decision_needs(client, session, signup) -> None:
    owner = await signup()
    account = await _with_free_plan(client, session, owner, budget_minor=1000)
    await charged(session, account.id, 250)
    inputs = await load_entitlement_inputs(session, account, now=datetime.now(UTC), expired_retention_days=12)
    assert inputs.account.status == "active" and inputs.account.suspension_reasons == frozenset()
    assert [(s.plan_code, s.status) for s in inputs.subscriptions] == [("free", "active")]
    assert inputs.subscriptions[0].quotas == Quotas(500, 512, 1, 1, concurrent_sessions=1, session_max_minutes=5)
    assert (inputs.budget.limit_minor, inputs.budget.spent_minor) == (1000, 250)
    assert inputs.policy.expired_retention == timedelta(days=12) and inputs.policy.grace == timedelta(days=7)
    decided = inputs.decide(datetime.now(UTC))
    assert decided.level == Level.running and decided.quotas == Quotas(500, 512, 1, 1, 1, 5)
    # After the period, the same inputs say expired, then deleted once the retention is over.
    end = inputs.subscriptions[0].period_end
    assert inputs.decide(end + timedelta(days=1)).level == Level.expired
    assert inputs.decide(end + timedelta(days=12)).level == Level.deleted


@pytest.mark.parametrize(
    ("mode", "days_past_due", "level", "banner"),
    [
        (BillingMode.card, 3, "running", True),
        (BillingMode.card, 8, "stopped", False),  # card: 7 days of grace
        (BillingMode.invoice, 8, "running", True),  # invoice: 14 days
        (BillingMode.invoice, 15, "stopped", False),
    ],
)
async def test_the_dunning_grace_depends_on_the_billing_mode(
    client, session, signup, mode, days_past_due, level, banner
) -> None:
    owner = await signup()
    await _with_free_plan(
        client, session, owner, billing_mode=mode, status=AccountStatus.past_due,
        past_due_since=datetime.now(UTC) - timedelta(days=days_past_due),
    )
    shown = await _entitlement(client, owner)
    assert shown["level"] == level
    if banner:
        assert "past due" in shown["warning_banner"] and shown["access"] == "full"
    else:
        assert shown["reasons"] == ["suspended: billing"] and shown["access"] == "read_only"


@pytest.mark.parametrize(
    ("spent", "level", "reason"),
    [(900, "running", None), (1000, "throttled", "monthly budget reached (100%)"), (1200, "stopped", "suspended: budget")],
)
async def test_budget_and_spend_reach_the_entitlement(client, session, signup, spent, level, reason) -> None:
    owner = await signup()
    await _with_free_plan(client, session, owner, budget_minor=1000)
    await charged(session, owner.account_id, spent)
    shown = await _entitlement(client, owner)
    assert shown["level"] == level
    assert shown["reasons"] == ([reason] if reason else [])


async def test_an_admin_hold_stops_everything_whatever_is_paid(client, session, signup) -> None:
    owner = await signup()
    await _with_free_plan(client, session, owner, status=AccountStatus.suspended, suspension_reasons=["admin"])
    shown = await _entitlement(client, owner)
    assert (shown["level"], shown["access"], shown["reasons"]) == ("stopped", "read_only", ["suspended: admin"])
    assert shown["quotas"]["max_instances"] == 1


def test_dunning_defaults_per_mode() -> None:
    assert dunning_policy(BillingMode.card).grace == timedelta(days=7)
    assert dunning_policy(BillingMode.invoice).grace == timedelta(days=14)
    assert dunning_policy(BillingMode.prepaid).grace > timedelta(days=3650)  # never automatically
    assert dunning_policy(BillingMode.free, expired_retention_days=5).expired_retention == timedelta(days=5)


@pytest.mark.parametrize(
    ("start", "months", "anchor", "expected"),
    [
        (datetime(2031, 1, 31, 9, tzinfo=UTC), 1, None, datetime(2031, 2, 28, 9, tzinfo=UTC)),
        (datetime(2031, 2, 28, 9, tzinfo=UTC), 1, 31, datetime(2031, 3, 31, 9, tzinfo=UTC)),  # no drift
        (datetime(2032, 1, 31, tzinfo=UTC), 1, None, datetime(2032, 2, 29, tzinfo=UTC)),  # leap year
        (datetime(2031, 12, 15, tzinfo=UTC), 1, None, datetime(2032, 1, 15, tzinfo=UTC)),
        (datetime(2032, 2, 29, tzinfo=UTC), 12, None, datetime(2033, 2, 28, tzinfo=UTC)),
    ],
)
def test_calendar_periods_are_anchored(start, months, anchor, expected) -> None:
    assert add_months(start, months, anchor_day=anchor) == expected


def test_free_periods_are_30_days_and_paid_ones_follow_the_interval() -> None:
    start = datetime(2031, 1, 31, tzinfo=UTC)
    assert period_end(start, interval="month", free=True) == start + timedelta(days=30)
    assert period_end(start, interval="month", free=False) == datetime(2031, 2, 28, tzinfo=UTC)
    assert period_end(start, interval="year", free=False) == datetime(2032, 1, 31, tzinfo=UTC)
