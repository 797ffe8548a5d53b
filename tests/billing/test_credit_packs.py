"""Credit packs: bought once, granted only when the payment is confirmed and then exactly once, whichever path
confirms it (Stripe's events, redelivered or not, the periodic pull, or an operator for off-platform billing);
an abandoned checkout grants nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from jushostit.billing.provider import StripeProvider
from jushostit.billing.stripe_api import stripe_client
from jushostit.kit.db import unit_of_work
from jushostit.models import Account, AuditEntry, BillingMode, CreditPurchase, Membership, Role
from jushostit.webhooks import service as inbox
from tests.billing.helpers import error_of
from tests.billing.test_stripe_checkout import card_account
from tests.conftest import asgi_client, joined_session
from tests.stripe_stand_in import StripeStandIn, stripe_stand_in
from tests.webhooks.helpers import delivered, stripe_settings


@pytest.fixture
async def card_shop(app_factory, session, signup, settings) -> AsyncIterator[tuple[Any, Any, Any, StripeStandIn]]:
    """A card account, and a server that takes its payments through the Stripe stand-in: (owner, settings,
    app, Stripe)."""
    owner, _ = await card_account(session, signup)
    router, stripe = stripe_stand_in()
    with router:
        yield owner, settings.model_copy(update=stripe_settings()), app_factory(**stripe_settings()), stripe


def buy_url(owner, pack: str = "credits-5k") -> str:
    return f"/v1/accounts/{owner.account_id}/credit-packs/{pack}/purchase"


async def balance(client, owner) -> int:
    answer = await client.get(f"/v1/accounts/{owner.account_id}/credits", headers=owner.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["balance"]


async def purchase_row(session, purchase_id: str) -> CreditPurchase:
    session.expire_all()
    return await session.get(CreditPurchase, uuid.UUID(purchase_id))


async def audited(session, purchase_id: str, action: str) -> int:
    rows = await session.scalars(select(AuditEntry.seq).where(
        AuditEntry.target_id == purchase_id, AuditEntry.action == action))
    return len(list(rows))


async def test_the_packs_for_sale_are_listed_publicly(client) -> None:
    listed = await client.get("/v1/credit-packs")
    assert listed.status_code == 200, listed.text
    assert [(p["code"], p["credits"], p["price"]) for p in listed.json()["items"]] == [
        ("credits-1k", 1000, "10.00"), ("credits-5k", 5000, "45.00"), ("credits-20k", 20000, "160.00")]


async def test_a_card_account_pays_on_stripe_checkout_and_stripes_confirmation_grants_the_credits_once(
    session, card_shop
) -> None:
    owner, configured, application, stripe = card_shop
    async with asgi_client(application) as client:
        bought = await client.post(buy_url(owner), headers=owner.headers)
        assert bought.status_code == 201, bought.text
        purchase = bought.json()
        assert (purchase["status"], purchase["provider"], purchase["credits"]) == ("pending", "stripe", 5000)
        assert await balance(client, owner) == 0  # nothing before the payment is confirmed
    [made] = stripe.created("/v1/checkout/sessions")
    assert (made["mode"], made["line_items[0][price_data][unit_amount]"],
            made["line_items[0][price_data][currency]"]) == ("payment", "4500", "eur")
    assert made["metadata[purchase_id]"] == purchase["id"] and made["customer"]
    assert stripe.keys("/v1/checkout/sessions") == [f"pack-checkout:{purchase['id']}"]
    checkout = next(o for o in stripe.objects.values() if o["object"] == "checkout.session")
    assert purchase["checkout_url"] == checkout["url"]

    # Stripe takes the payment; its event arrives twice (a redelivery as a new event), and the pull runs.
    stripe.put({**checkout, "status": "complete", "payment_status": "paid", "payment_intent": "pi_paid"})
    obj = {"id": checkout["id"], "object": "checkout.session", "customer": made["customer"]}
    for _ in range(2):
        row = await delivered(application, session, configured, "checkout.session.completed", obj)
        assert row.status == "processed", row.last_error
    async with joined_session(session.bind) as worker, unit_of_work(worker):
        await inbox.pull_pack_checkout(worker, StripeProvider(stripe_client(configured)),
                                       account_id=uuid.UUID(owner.account_id), checkout_id=checkout["id"])
    async with asgi_client(application) as client:
        assert await balance(client, owner) == 5000
    paid = await purchase_row(session, purchase["id"])
    assert (paid.status, paid.payment_reference) == ("paid", "pi_paid")
    assert await audited(session, purchase["id"], "credit_pack.paid") == 1


async def test_a_bank_debit_still_clearing_grants_nothing_until_stripe_says_it_cleared(session, card_shop) -> None:
    owner, configured, application, stripe = card_shop
    async with asgi_client(application) as client:
        purchase = (await client.post(buy_url(owner, "credits-1k"), headers=owner.headers)).json()
    checkout = next(o for o in stripe.objects.values() if o["object"] == "checkout.session")
    obj = {"id": checkout["id"], "object": "checkout.session", "customer": checkout["customer"]}
    stripe.put({**checkout, "status": "complete", "payment_status": "unpaid", "payment_intent": "pi_sepa"})
    await delivered(application, session, configured, "checkout.session.completed", obj)
    assert (await purchase_row(session, purchase["id"])).status == "pending"
    stripe.put({**checkout, "status": "complete", "payment_status": "paid", "payment_intent": "pi_sepa"})
    await delivered(application, session, configured, "checkout.session.async_payment_succeeded", obj)
    async with asgi_client(application) as client:
        assert await balance(client, owner) == 1000


async def test_an_abandoned_pack_checkout_expires_and_grants_nothing(session, card_shop, admin) -> None:
    operator = await admin()
    owner, configured, application, stripe = card_shop
    async with asgi_client(application) as client:
        purchase = (await client.post(buy_url(owner), headers=owner.headers)).json()
    checkout = next(o for o in stripe.objects.values() if o["object"] == "checkout.session")
    stripe.put({**checkout, "status": "expired"})
    await delivered(application, session, configured, "checkout.session.expired",
                    {"id": checkout["id"], "object": "checkout.session", "customer": checkout["customer"]})
    async with asgi_client(application) as client:
        assert await balance(client, owner) == 0
        # Only Stripe confirms a card purchase: an operator cannot mark it paid.
        error_of(await client.post(f"/v1/admin/credit-purchases/{purchase['id']}/mark-paid", json={},
                                   headers=operator.headers), 409, "paid_by_provider")
    assert (await purchase_row(session, purchase["id"])).status == "expired"


async def test_an_off_platform_pack_is_granted_once_when_an_operator_records_its_payment(
    client, session, signup, admin
) -> None:
    operator, owner = await admin(), await signup()
    account = await session.get(Account, uuid.UUID(owner.account_id))
    account.billing_mode = BillingMode.invoice
    await session.flush()
    bought = await client.post(buy_url(owner, "credits-1k"), headers=owner.headers)
    assert bought.status_code == 201, bought.text
    purchase = bought.json()
    assert (purchase["provider"], purchase["checkout_url"], await balance(client, owner)) == ("manual", None, 0)
    url = f"/v1/admin/credit-purchases/{purchase['id']}/mark-paid"
    for _ in range(2):  # a second operator, or a retried click: granted once
        paid = await client.post(url, json={"payment_reference": "TR-2026-118"}, headers=operator.headers)
        assert paid.status_code == 200 and paid.json()["status"] == "paid", paid.text
    assert await balance(client, owner) == 1000
    listed = (await client.get(f"/v1/accounts/{owner.account_id}/credit-purchases", headers=owner.headers)).json()
    assert [(p["id"], p["status"], p["payment_reference"]) for p in listed["items"]] == [
        (purchase["id"], "paid", "TR-2026-118")]
    error_of(await client.post(url, json={}, headers=owner.headers), 403)  # operators only


async def test_purchases_that_cannot_be_made_are_refused_and_change_nothing(client, session, signup) -> None:
    owner, member, unverified = await signup(), await signup(), await signup(verified=False)
    session.add(Membership(account_id=uuid.UUID(owner.account_id), user_id=uuid.UUID(member.user_id), role=Role.member))
    await session.flush()
    error_of(await client.post(buy_url(owner, "credits-3k"), headers=owner.headers), 404, "credit_pack_not_found")
    # A free account has no way to pay for a pack.
    error_of(await client.post(buy_url(owner), headers=owner.headers), 409, "billing_mode_not_allowed")
    error_of(await client.post(buy_url(owner), headers=member.headers), 403)
    error_of(await client.post(buy_url(unverified), headers=unverified.headers), 403, "email_unverified")
    assert (await session.scalars(select(CreditPurchase.id).where(
        CreditPurchase.account_id.in_([uuid.UUID(owner.account_id), uuid.UUID(unverified.account_id)])))).all() == []
