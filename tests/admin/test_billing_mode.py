"""An operator sets how an account pays; that decides which plans it may take."""

from __future__ import annotations

from sqlalchemy import select

from jushostit.models import AuditEntry


async def test_invoice_mode_opens_paid_plans_and_is_audited(client, session, signup, admin) -> None:
    operator = await admin()
    customer = await signup()
    refused = await client.post(f"/v1/accounts/{customer.account_id}/checkout", json={"plan": "starter"},
                                headers=customer.headers)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "billing_mode_not_allowed"

    changed = await client.post(f"/v1/admin/accounts/{customer.account_id}/billing-mode",
                                json={"billing_mode": "invoice"}, headers=operator.headers)
    assert changed.status_code == 200 and changed.json()["billing_mode"] == "invoice"
    entry = await session.scalar(
        select(AuditEntry).where(AuditEntry.action == "admin.billing_mode_changed",
                                 AuditEntry.target_id == customer.account_id)
    )
    assert entry.before == {"billing_mode": "free"} and entry.after == {"billing_mode": "invoice"}

    pending = await client.post(f"/v1/accounts/{customer.account_id}/checkout", json={"plan": "starter"},
                                headers=customer.headers)
    assert pending.status_code == 201 and pending.json()["subscription"]["status"] == "pending"


async def test_bad_mode_and_non_admins_are_refused(client, signup, admin) -> None:
    operator = await admin()
    customer = await signup()
    bad = await client.post(f"/v1/admin/accounts/{customer.account_id}/billing-mode",
                            json={"billing_mode": "barter"}, headers=operator.headers)
    assert bad.status_code == 422
    own = await client.post(f"/v1/admin/accounts/{customer.account_id}/billing-mode",
                            json={"billing_mode": "invoice"}, headers=customer.headers)
    assert own.status_code == 403
