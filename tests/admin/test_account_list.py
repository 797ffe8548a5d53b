"""The platform admins' account list counts what is not working: every failing instance, none deleted."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from jushostit.kit.db import utcnow
from jushostit.models import Instance


def an_instance(account_id: str, name: str, **columns: Any) -> Instance:
    return Instance(account_id=uuid.UUID(account_id), template_code="static-site", name=name,
                    slug=f"{name}-{uuid.uuid4().hex[:6]}", tier="small", **columns)


async def listed(client: Any, operator: Any, account_id: str, **params: str) -> dict[str, Any] | None:
    response = await client.get("/v1/admin/accounts", params={"limit": "100", **params}, headers=operator.headers)
    assert response.status_code == 200, response.text
    return next((a for a in response.json()["items"] if a["id"] == account_id), None)


async def test_the_account_list_counts_failed_instances_without_an_error_and_skips_deleted_ones(
    client, session, signup, admin
) -> None:
    operator, customer = await admin(), await signup()
    now = utcnow()
    session.add_all([
        an_instance(customer.account_id, "fine", observed_status="running", last_reconciled_at=now),
        # A permanent problem: failed with its reason, no runtime error (the reconciler does not retry it).
        an_instance(customer.account_id, "cannot-run", observed_status="failed",
                    status_reason="template not runnable on the local runtime",
                    last_reconciled_at=now - timedelta(minutes=5)),
        an_instance(customer.account_id, "gone", observed_status="failed", status_reason="deleted long ago",
                    last_error="ZZZ: an old error", deleted_at=now, last_reconciled_at=now),
    ])
    await session.flush()

    shown = await listed(client, operator, customer.account_id)
    assert shown is not None
    assert (shown["instances"], shown["failing_instances"]) == (2, 1)
    assert shown["last_error"] == "template not runnable on the local runtime"
    assert await listed(client, operator, customer.account_id, failing="true") is not None

    # An error of the last apply counts too, and the latest problem is the one shown (not the greatest text).
    session.add(an_instance(customer.account_id, "refused", observed_status="failed", last_reconciled_at=now,
                            status_reason="the runtime could not apply it", last_error="ConnectionError: refused"))
    await session.flush()
    shown = await listed(client, operator, customer.account_id)
    assert shown is not None
    assert (shown["instances"], shown["failing_instances"]) == (3, 2)
    assert shown["last_error"] == "ConnectionError: refused"

    healthy = await signup()
    session.add(an_instance(healthy.account_id, "fine", observed_status="running"))
    session.add(an_instance(healthy.account_id, "old", observed_status="failed", deleted_at=now))
    await session.flush()
    assert await listed(client, operator, healthy.account_id, failing="true") is None
    shown = await listed(client, operator, healthy.account_id)
    assert shown is not None and (shown["instances"], shown["failing_instances"]) == (1, 0)
