"""Idempotency-Key records older than a week are forgotten; newer ones still replay."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from jushostit.billing.tasks import KEEP_IDEMPOTENCY_KEYS_FOR
from jushostit.idempotency import IdempotencyRepository
from jushostit.kit.db import utcnow
from jushostit.models import IdempotencyKey


async def test_old_keys_are_purged_recent_ones_kept(client, session, signup) -> None:
    owner = await signup()
    headers = {**owner.headers, "Idempotency-Key": "checkout-1"}
    first = await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "free"}, headers=headers)
    assert first.status_code == 201
    row = await session.scalar(select(IdempotencyKey).where(IdempotencyKey.key == "checkout-1"))
    assert row is not None
    await IdempotencyRepository(session).purge(utcnow() - KEEP_IDEMPOTENCY_KEYS_FOR)
    assert await session.scalar(select(func.count()).select_from(IdempotencyKey).where(IdempotencyKey.id == row.id)) == 1
    replay = await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "free"}, headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"

    row.created_at = utcnow() - KEEP_IDEMPOTENCY_KEYS_FOR - timedelta(minutes=1)
    await session.flush()
    assert await IdempotencyRepository(session).purge(utcnow() - KEEP_IDEMPOTENCY_KEYS_FOR) >= 1
    assert await session.scalar(select(func.count()).select_from(IdempotencyKey).where(IdempotencyKey.id == row.id)) == 0
