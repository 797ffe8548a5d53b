"""A dunning policy per account: the billing mode's defaults, overridden by admins with ISO 8601 durations; the
grace it sets is the one the entitlement applies (DESIGN §3)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from jushostit.models import Account, AuditEntry, BillingMode
from tests.billing.helpers import error_of


async def card_customer(session, signup, *, past_due_for: timedelta | None = None):
    who = await signup()
    account = await session.get(Account, uuid.UUID(who.account_id))
    account.billing_mode = BillingMode.card
    if past_due_for is not None:
        account.past_due_since = datetime.now(UTC) - past_due_for
    await session.flush()
    return who


def policy_url(who) -> str:
    return f"/v1/admin/accounts/{who.account_id}/dunning-policy"


async def test_the_effective_policy_shows_the_billing_modes_defaults_and_where_each_comes_from(
    client, session, signup, admin
) -> None:
    operator, customer = await admin(), await card_customer(session, signup)
    shown = await client.get(policy_url(customer), headers=operator.headers)
    assert shown.status_code == 200, shown.text
    assert shown.json() == {
        "account_id": customer.account_id, "billing_mode": "card", "grace": "P7D",
        "reminders": ["P1D", "P3D", "P6D"], "terminate_after": "P30D",
        "sources": {"grace": "default:card", "reminders": "default:card", "terminate_after": "default:card"},
    }


async def test_an_admin_overrides_the_policy_per_account_with_iso_durations_and_it_is_audited(
    client, session, signup, admin
) -> None:
    operator, customer = await admin(), await card_customer(session, signup)
    changed = await client.put(policy_url(customer), json={
        "grace": "PT30S", "reminders": ["PT10S", "PT20S"], "terminate_after": None,
    }, headers=operator.headers)
    assert changed.status_code == 200, changed.text
    assert changed.json() | {"account_id": None} == {
        "account_id": None, "billing_mode": "card", "grace": "PT30S", "reminders": ["PT10S", "PT20S"],
        "terminate_after": None,
        "sources": {"grace": "account", "reminders": "account", "terminate_after": "account"},
    }
    entry = await session.scalar(select(AuditEntry).where(
        AuditEntry.action == "admin.dunning_policy_changed", AuditEntry.target_id == customer.account_id))
    assert entry.before == {"dunning_policy": None}
    assert entry.after == {"dunning_policy": {"grace": "PT30S", "reminders": ["PT10S", "PT20S"],
                                              "terminate_after": None}}
    # Leaving a field out follows the default again; {} removes every override.
    partial = await client.put(policy_url(customer), json={"grace": "P10D"}, headers=operator.headers)
    assert partial.json()["sources"] == {"grace": "account", "reminders": "default:card",
                                         "terminate_after": "default:card"}
    reset = await client.put(policy_url(customer), json={}, headers=operator.headers)
    assert reset.json()["grace"] == "P7D" and set(reset.json()["sources"].values()) == {"default:card"}


async def test_bad_policies_are_refused_and_change_nothing(client, session, signup, admin) -> None:
    operator, customer = await admin(), await card_customer(session, signup)
    for body in ({"grace": "7 days"}, {"grace": "PT0S"}, {"grace": "P4000D"}, {"reminders": ["P1D"] * 11},
                 {"grace": 7}, {"unknown": "P1D"}):
        error_of(await client.put(policy_url(customer), json=body, headers=operator.headers), 422)
    # A reminder at or after the grace (the default reminders are 1, 3 and 6 days): 400.
    late = await client.put(policy_url(customer), json={"grace": "PT30S"}, headers=operator.headers)
    error_of(late, 400, "invalid_dunning_policy")
    error_of(await client.put(policy_url(customer), json={}, headers=customer.headers), 403, "admin_required")
    account = await session.get(Account, uuid.UUID(customer.account_id))
    await session.refresh(account)
    assert account.dunning_policy is None


async def test_the_accounts_own_grace_decides_when_being_past_due_suspends_it(client, session, signup, admin) -> None:
    operator = await admin()
    customer = await card_customer(session, signup, past_due_for=timedelta(minutes=2))
    before = (await client.get(f"/v1/accounts/{customer.account_id}", headers=customer.headers)).json()
    assert before["entitlement"]["warning_banner"] is not None  # 7 days of grace: still running, with a banner
    assert "billing" not in before["entitlement"]["holds"]
    shortened = await client.put(policy_url(customer), json={"grace": "PT60S", "reminders": []},
                                 headers=operator.headers)
    assert shortened.status_code == 200, shortened.text
    after = (await client.get(f"/v1/accounts/{customer.account_id}", headers=customer.headers)).json()
    assert "billing" in after["entitlement"]["holds"] and after["entitlement"]["level"] == "stopped"


async def test_durations_are_answered_in_days_and_time_never_in_years(client, session, signup, admin) -> None:
    operator, customer = await admin(), await card_customer(session, signup)
    changed = await client.put(policy_url(customer), json={
        "grace": "P7DT1H30M", "reminders": ["PT90S"], "terminate_after": "P601D"}, headers=operator.headers)
    assert changed.status_code == 200, changed.text
    shown = (await client.get(policy_url(customer), headers=operator.headers)).json()
    assert (shown["grace"], shown["reminders"], shown["terminate_after"]) == ("P7DT1H30M", ["PT1M30S"], "P601D")
