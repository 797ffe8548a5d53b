"""Ordering an instance honours Idempotency-Key: a retried order never creates a second instance."""

from __future__ import annotations

from sqlalchemy import func, select

from jushostit.models import Instance


async def test_same_key_replays_other_body_conflicts(client, session, signup) -> None:
    owner = await signup()
    checkout = await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "free"}, headers=owner.headers)
    assert checkout.status_code == 201, checkout.text
    headers = {**owner.headers, "Idempotency-Key": "order-1"}
    body = {"template": "static-site", "name": "site"}

    first = await client.post(f"/v1/accounts/{owner.account_id}/instances", json=body, headers=headers)
    again = await client.post(f"/v1/accounts/{owner.account_id}/instances", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    count = await session.scalar(select(func.count()).select_from(Instance).where(Instance.account_id == first.json()["account_id"]))
    assert count == 1

    other = await client.post(f"/v1/accounts/{owner.account_id}/instances", json={**body, "name": "other"}, headers=headers)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert await session.scalar(select(func.count()).select_from(Instance).where(Instance.name == "other")) == 0


async def test_refused_order_creates_nothing_and_stores_no_response(client, session, signup) -> None:
    owner = await signup()
    headers = {**owner.headers, "Idempotency-Key": "order-2"}
    # No subscription yet: not entitled to order.
    refused = await client.post(f"/v1/accounts/{owner.account_id}/instances",
                                json={"template": "static-site", "name": "site"}, headers=headers)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_entitled"
    assert await session.scalar(select(func.count()).select_from(Instance).where(Instance.name == "site")) == 0
    # The same key works once the account is entitled: errors are not stored.
    await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "free"}, headers=owner.headers)
    ok = await client.post(f"/v1/accounts/{owner.account_id}/instances",
                           json={"template": "static-site", "name": "site"}, headers=headers)
    assert ok.status_code == 201, ok.text
