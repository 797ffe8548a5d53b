"""A plan's included credits at each paid period (issue 9 §9): reset or rollover with a cap, once per period,
from the period's start when it is paid ahead. Driven through the real checkout, mark-paid and renewal routes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import time_machine
from sqlalchemy import select

from jushostit.credits import service as credits
from jushostit.models import Plan
from tests.billing.helpers import at, free_subscription, login, paid_subscription
from tests.credits.helpers import assert_ledger_agrees, entries_of

T0 = datetime(2031, 3, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


async def set_plan(client, operator, code: str, **fields: Any) -> None:
    response = await client.patch(f"/v1/admin/plans/{code}", json=fields, headers=await login(client, operator))
    assert response.status_code == 200, response.text
    assert {name: response.json()[name] for name in fields} == fields


async def shown(client, owner) -> dict[str, Any]:
    response = await client.get(f"/v1/accounts/{owner.account_id}/credits", headers=await login(client, owner))
    assert response.status_code == 200, response.text
    return response.json()


async def debit(client, operator, owner, amount: int) -> dict[str, Any]:
    response = await client.post(
        f"/v1/admin/accounts/{owner.account_id}/credits/debits", json={"amount": amount, "reason": "usage"},
        headers=await login(client, operator),
    )
    assert response.status_code == 201, response.text
    return response.json()


async def renew(client, operator, sub: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(
        f"/v1/admin/subscriptions/{sub['id']}/renew", json={"period_start": sub["current_period_end"]},
        headers=await login(client, operator),
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_reset_plan_credits_expire_at_the_period_end_and_come_once_per_period(client, session, signup,
                                                                                    admin) -> None:
    with time_machine.travel(T0, tick=False):
        operator = await admin()
        owner = await signup()
        await set_plan(client, operator, "pro", included_credits=100)
        sub = await paid_subscription(client, session, owner, operator)
        first = await shown(client, owner)
    end1 = at(sub["current_period_end"])
    assert first["balance"] == 100
    [plan_grant] = first["grants"]
    assert (plan_grant["source"], plan_grant["remaining"], at(plan_grant["expires_at"])) == ("plan", 100, end1)

    with time_machine.travel(T0 + 10 * DAY, tick=False):
        await debit(client, operator, owner, 30)
    with time_machine.travel(T0 + 20 * DAY, tick=False):  # paid ahead: the next period's credits start at end1
        renewed = await renew(client, operator, sub)
        assert await renew(client, operator, sub) == renewed  # the same period reported again
        view = await shown(client, owner)
    assert view["balance"] == 70
    [upcoming] = view["upcoming"]
    assert (upcoming["amount"], at(upcoming["effective_at"]), at(upcoming["expires_at"])) == (
        100, end1, at(renewed["current_period_end"]),
    )

    with time_machine.travel(end1 + DAY, tick=False):
        after = await shown(client, owner)
        assert after["balance"] == 100  # the 70 left expired with their period; the new 100 started
        assert [g["id"] for g in after["grants"]] == [upcoming["id"]]
        await debit(client, operator, owner, 1)
        await assert_ledger_agrees(session, uuid.UUID(owner.account_id), 99)
    kinds = [(e.kind, e.delta, e.balance_after) for e in await entries_of(session, uuid.UUID(owner.account_id))]
    assert kinds == [("grant", 100, 100), ("debit", -30, 70), ("grant", 100, 170), ("expiry", -70, 100),
                     ("debit", -1, 99)]


async def test_a_period_is_granted_once_whichever_path_reports_it(client, session, signup, admin) -> None:
    with time_machine.travel(T0, tick=False):
        operator = await admin()
        owner = await signup()
        await set_plan(client, operator, "pro", included_credits=100)
        sub = await paid_subscription(client, session, owner, operator)
    plan = await session.scalar(select(Plan).where(Plan.code == "pro"))
    assert plan is not None
    account = uuid.UUID(owner.account_id)
    with time_machine.travel(T0 + 20 * DAY, tick=False):
        await renew(client, operator, sub)
        # Reported once more by another path (a webhook, a resync): nothing new.
        again = await credits.grant_period_credits(
            session, account_id=account, subscription_id=uuid.UUID(sub["id"]), plan=plan,
            period_start=at(sub["current_period_end"]), period_end=at(sub["current_period_end"]) + 30 * DAY,
        )
    assert again is None
    assert [e.kind for e in await entries_of(session, account)] == ["grant"]  # the renewal's starts at end1


async def test_rollover_carries_what_is_left_up_to_the_cap(client, session, signup, admin) -> None:
    with time_machine.travel(T0, tick=False):
        operator = await admin()
        owner = await signup()
        await set_plan(client, operator, "pro", included_credits=100, credits_rollover=True, credits_rollover_cap=50)
        sub = await paid_subscription(client, session, owner, operator)
    end1 = at(sub["current_period_end"])
    with time_machine.travel(T0 + 10 * DAY, tick=False):
        await debit(client, operator, owner, 20)
    with time_machine.travel(T0 + 20 * DAY, tick=False):
        renewed = await renew(client, operator, sub)
        await renew(client, operator, sub)  # once per period
        view = await shown(client, owner)
    end2 = at(renewed["current_period_end"])
    # 80 left: 50 (the cap) move into a grant of the next period, 30 stay and expire at end1. Nothing is lost
    # early and the balance does not change.
    assert view["balance"] == 80
    assert sorted((g["source"], g["remaining"], at(g["expires_at"])) for g in view["grants"]) == [
        ("plan", 30, end1), ("rollover", 50, end2),
    ]
    with time_machine.travel(T0 + 25 * DAY, tick=False):
        used = await debit(client, operator, owner, 10)  # burns the soonest expiry: the 30 that stay behind
    old = next(g for g in view["grants"] if g["source"] == "plan")
    assert used["entry"]["allocations"] == [{"grant_id": old["id"], "amount": 10}]

    with time_machine.travel(end1 + DAY, tick=False):
        after = await shown(client, owner)
        assert after["balance"] == 150  # 50 carried + 100 of the new period; the other 20 expired at end1
        await debit(client, operator, owner, 1)
        await assert_ledger_agrees(session, uuid.UUID(owner.account_id), 149)
    kinds = [(e.kind, e.delta) for e in await entries_of(session, uuid.UUID(owner.account_id))]
    assert kinds == [("grant", 100), ("debit", -20), ("rollover", 0), ("debit", -10), ("grant", 100),
                     ("expiry", -20), ("debit", -1)]


async def test_a_free_plans_first_period_brings_its_credits_at_checkout(client, session, signup, admin) -> None:
    with time_machine.travel(T0, tick=False):
        operator = await admin()
        owner = await signup()
        await set_plan(client, operator, "free", included_credits=10)
        sub = await free_subscription(client, owner)
        view = await shown(client, owner)
    assert view["balance"] == 10
    [lot] = view["grants"]
    assert (lot["source"], at(lot["expires_at"]), lot["subscription_id"]) == (
        "plan", at(sub["current_period_end"]), sub["id"],
    )


async def test_a_plan_without_credits_writes_nothing(client, session, signup, admin) -> None:
    operator = await admin()
    owner = await signup()
    await paid_subscription(client, session, owner, operator)
    assert await entries_of(session, uuid.UUID(owner.account_id)) == []
    assert (await shown(client, owner))["balance"] == 0


async def test_admins_set_a_plans_credits_on_create_and_update(client, signup, admin) -> None:
    operator = await admin()
    body = {
        "code": f"credits-{uuid.uuid4().hex[:8]}", "name": "Credits plan", "price_minor": 500, "currency": "EUR",
        "billing_modes": ["invoice"],
        "quotas": {"cpu_millicores": 100, "memory_mib": 128, "storage_gib": 1, "max_instances": 1},
        "included_credits": 1000, "credits_rollover": True, "credits_rollover_cap": 500,
    }
    created = await client.post("/v1/admin/plans", json=body, headers=operator.headers)
    assert created.status_code == 201, created.text
    assert (created.json()["included_credits"], created.json()["credits_rollover_cap"]) == (1000, 500)
    await set_plan(client, operator, body["code"], credits_rollover=False, credits_rollover_cap=None)
    for refused in ({"included_credits": None}, {"credits_rollover": None}, {"included_credits": -1},
                    {"credits_rollover_cap": 10**16}, {"credits_rollover": "yes"}):
        response = await client.patch(f"/v1/admin/plans/{body['code']}", json=refused, headers=operator.headers)
        assert response.status_code == 422, (refused, response.text)
    public = {p["code"]: p for p in (await client.get("/v1/plans", params={"limit": 200})).json()["items"]}
    assert public[body["code"]]["included_credits"] == 1000
