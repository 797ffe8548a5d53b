"""Small helpers shared by the billing tests."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text

from jushostit.models import Account, AuditEntry, BillingMode, Payment, Subscription
from tests.conftest import TEST_PASSWORD


async def login(client, who) -> dict[str, str]:
    """Fresh access token (inside a travelled clock, the signup's token has expired)."""
    response = await client.post("/v1/auth/login", json={"email": who.email, "password": TEST_PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def error_of(response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


async def reconcile_jobs(session, account_id: str) -> list[Any]:
    """The reconcile jobs procrastinate holds for the account (deferred after the request's commit)."""
    rows = await session.execute(
        text(
            "SELECT task_name, args, queueing_lock, lock, status FROM procrastinate_jobs "
            "WHERE task_name = 'account.reconcile' AND args->>'account_id' = :account_id"
        ),
        {"account_id": account_id},
    )
    return list(rows.all())


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def renewal_count(session, subscription_id: str) -> int:
    stmt = select(func.count()).select_from(AuditEntry).where(
        AuditEntry.action == "subscription.renewed", AuditEntry.target_id == subscription_id
    )
    return int(await session.scalar(stmt) or 0)


async def stored_subscription(session, subscription_id: str) -> Subscription:
    session.expire_all()
    found = await session.get(Subscription, uuid.UUID(subscription_id))
    assert found is not None
    return found


async def payments_of(session, subscription_id: str) -> list[Payment]:
    stmt = select(Payment).where(Payment.subscription_id == uuid.UUID(subscription_id)).order_by(Payment.period_start)
    return list((await session.scalars(stmt)).all())


async def free_subscription(client, who) -> dict[str, Any]:
    response = await client.post(f"/v1/accounts/{who.account_id}/checkout", json={"plan": "free"}, headers=who.headers)
    assert response.status_code == 201, response.text
    return response.json()["subscription"]


async def paid_subscription(client, session, owner, operator, plan: str = "pro") -> dict[str, Any]:
    """An active subscription to a paid plan: the account is invoiced, the operator marked it paid."""
    account = await session.get(Account, uuid.UUID(owner.account_id))
    account.billing_mode = BillingMode.invoice
    await session.flush()
    checkout = await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": plan}, headers=owner.headers)
    assert checkout.status_code == 201, checkout.text
    sid = checkout.json()["subscription"]["id"]
    paid = await client.post(f"/v1/admin/subscriptions/{sid}/mark-paid", headers=operator.headers)
    assert paid.status_code == 200, paid.text
    return paid.json()


async def wait_until_blocked(container, count: int) -> None:
    """Until `count` sessions of this database wait on a lock (a condition, polled; not a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + 15
    async with container.database.engine.connect() as probe:
        while True:
            waiting = await probe.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
            )
            await probe.rollback()
            if waiting >= count:
                return
            assert asyncio.get_running_loop().time() < deadline, f"only {waiting} of {count} requests blocked"
            await asyncio.sleep(0.01)
