"""An operator sets how an account pays; that decides which plans it may take."""

from __future__ import annotations

import uuid

from pydantic import SecretStr
from sqlalchemy import select

from jushostit.models import Account, AuditEntry, BillingMode
from tests.conftest import asgi_client, sign_up


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


async def test_card_billing_needs_stripe_configured(app_factory, session, signup, admin) -> None:
    operator = await admin()
    customer = await signup()
    refused = await client_post_mode(app_factory(), customer, operator, "card")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "card_payments_not_configured"
    account = await session.get(Account, uuid.UUID(customer.account_id))
    assert account is not None and account.billing_mode == BillingMode.free

    configured = app_factory(stripe_secret_key=SecretStr("sk_test_configured"))
    accepted = await client_post_mode(configured, customer, operator, "card")
    assert accepted.status_code == 200 and accepted.json()["billing_mode"] == "card", accepted.text


async def test_new_accounts_are_billed_by_card_once_stripe_is_configured_unless_a_default_is_set(
    app_factory, session, last_email
) -> None:
    async def new_account_mode(application) -> BillingMode:
        async with asgi_client(application) as client:
            who = await sign_up(client, last_email, f"mode-{uuid.uuid4().hex[:8]}@example.com", "Mode Co")
        account = await session.get(Account, uuid.UUID(who.account_id))
        assert account is not None
        return account.billing_mode

    stripe_key = SecretStr("sk_test_configured")
    assert await new_account_mode(app_factory()) == BillingMode.free
    assert await new_account_mode(app_factory(stripe_secret_key=stripe_key)) == BillingMode.card
    assert await new_account_mode(app_factory(stripe_secret_key=stripe_key, default_billing_mode="invoice")) == (
        BillingMode.invoice
    )


async def client_post_mode(application, customer, operator, mode: str):
    async with asgi_client(application) as client:
        return await client.post(f"/v1/admin/accounts/{customer.account_id}/billing-mode",
                                 json={"billing_mode": mode}, headers=operator.headers)
