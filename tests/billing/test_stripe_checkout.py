"""Card checkout on Stripe Checkout without duplicates (REFERENCE §1 F3): the pending subscription is committed
before Stripe is called; the customer (once per account) and the Checkout Session carry idempotency keys
derived from our own ids; a retry answers the same session; an abandoned checkout lapses and never blocks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import time_machine
from sqlalchemy import select

from jushostit.billing.service import sold_terms
from jushostit.models import Account, AuditEntry, BillingMode, Plan, Subscription
from tests.billing.helpers import error_of, login
from tests.conftest import asgi_client
from tests.stripe_stand_in import stripe_stand_in
from tests.webhooks.helpers import stripe_settings


async def card_account(session, signup):
    owner = await signup()
    account = await session.get(Account, uuid.UUID(owner.account_id))
    account.billing_mode = BillingMode.card
    await session.flush()
    return owner, account


async def checkout(application, owner, plan: str = "starter", headers=None) -> httpx.Response:
    async with asgi_client(application) as client:
        return await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": plan},
                                 headers=headers or owner.headers)


def sessions(stripe) -> list[dict]:
    return [obj for obj in stripe.objects.values() if obj["object"] == "checkout.session"]


async def actions(session, target_id) -> list[str]:
    rows = await session.scalars(select(AuditEntry.action).where(AuditEntry.target_id == str(target_id))
                                 .order_by(AuditEntry.seq))
    return list(rows)


async def test_a_card_checkout_commits_the_pending_subscription_then_opens_a_stripe_checkout_session(
    app_factory, session, signup, settings
) -> None:
    owner, _ = await card_account(session, signup)
    router, stripe = stripe_stand_in()
    with router:
        response = await checkout(app_factory(**stripe_settings()), owner)
    assert response.status_code == 201, response.text
    body = response.json()
    subscription_id = body["subscription"]["id"]
    assert (body["subscription"]["status"], body["subscription"]["provider"]) == ("pending", "stripe")
    [made] = sessions(stripe)
    assert body["checkout_url"] == made["url"]

    [customer] = stripe.created("/v1/customers")
    assert stripe.keys("/v1/customers") == [f"customer:{owner.account_id}"]
    assert customer["metadata[account_id]"] == owner.account_id and customer["email"] == owner.email
    assert stripe.keys("/v1/checkout/sessions") == [f"checkout:{subscription_id}"]
    starter = await session.scalar(select(Plan).where(Plan.code == "starter"))
    back = f"{settings.base_url}/billing/checkout?subscription={subscription_id}"
    metadata = {"account_id": owner.account_id, "plan": "starter", "subscription_id": subscription_id}
    # The plan version's Stripe Price, made once with its Product: found by lookup key next time.
    lookup_key = f"jushostit:starter:{starter.version}"
    [product] = stripe.created("/v1/products")
    [price] = stripe.created("/v1/prices")
    assert product == {"id": "jushostit_starter", "name": starter.name, "metadata[plan]": "starter"}
    assert price == {
        "product": "jushostit_starter", "currency": starter.currency.lower(), "unit_amount": str(starter.price_minor),
        "recurring[interval]": "month", "lookup_key": lookup_key,
        "metadata[plan]": "starter", "metadata[version]": str(starter.version),
    }
    assert stripe.keys("/v1/prices") == [f"price:{lookup_key}"] and stripe.keys("/v1/products") == ["product:starter"]
    price_id = next(obj["id"] for obj in stripe.objects.values() if obj.get("lookup_key") == lookup_key)
    assert stripe.created("/v1/checkout/sessions") == [{
        "mode": "subscription", "customer": "cus_test1", "client_reference_id": owner.account_id,
        "line_items[0][quantity]": "1", "line_items[0][price]": price_id,
        **{f"metadata[{k}]": v for k, v in metadata.items()},
        **{f"subscription_data[metadata][{k}]": v for k, v in metadata.items()},
        "success_url": f"{back}&result=paid", "cancel_url": f"{back}&result=cancelled",
    }]
    session.expire_all()
    row = await session.get(Subscription, uuid.UUID(subscription_id))
    assert (row.status, row.checkout_session_id, row.checkout_url) == ("pending", made["id"], body["checkout_url"])
    assert row.stripe_price_id == price_id  # the subscription keeps the price it is sold at
    assert (await session.get(Account, uuid.UUID(owner.account_id))).provider_customer_id == "cus_test1"
    assert await actions(session, subscription_id) == ["subscription.created", "subscription.checkout_opened"]
    assert "account.payment_customer_created" in await actions(session, owner.account_id)


async def test_a_retried_checkout_answers_the_same_subscription_and_session(app_factory, session, signup) -> None:
    owner, _ = await card_account(session, signup)
    application = app_factory(**stripe_settings())
    router, stripe = stripe_stand_in()
    with router:
        first = await checkout(application, owner)
        again = await checkout(application, owner)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert len(stripe.created("/v1/checkout/sessions")) == 1  # the second answer came from our own record
    assert len(list(await session.scalars(select(Subscription).where(
        Subscription.account_id == uuid.UUID(owner.account_id))))) == 1


async def test_an_answer_lost_on_the_way_back_from_stripe_is_retried_without_a_second_customer_or_session(
    app_factory, session, signup
) -> None:
    owner, _ = await card_account(session, signup)
    application = app_factory(**stripe_settings())
    router, stripe = stripe_stand_in()
    with router:
        stripe.fail_next.append(httpx.ReadTimeout("the answer was lost"))  # the customer is made; we never hear
        lost = await checkout(application, owner)
        stripe.fail_next.append(httpx.ReadTimeout("the answer was lost"))  # now the session is
        lost_again = await checkout(application, owner)
        retried = await checkout(application, owner)
    error_of(lost, 503, "payment_provider_unavailable")
    error_of(lost_again, 503, "payment_provider_unavailable")
    assert retried.status_code == 201, retried.text
    # Stripe saw three customer requests and two session requests, all with the same keys: one of each exists.
    assert set(stripe.keys("/v1/customers")) == {f"customer:{owner.account_id}"}
    assert set(stripe.keys("/v1/checkout/sessions")) == {f"checkout:{retried.json()['subscription']['id']}"}
    [made] = sessions(stripe)  # one session at Stripe, however many times it was asked for
    assert retried.json()["checkout_url"] == made["url"]


async def test_an_abandoned_checkout_lapses_after_24_hours_and_never_blocks_a_new_one(
    app_factory, client, session, signup
) -> None:
    owner, _ = await card_account(session, signup)
    application = app_factory(**stripe_settings())
    router, stripe = stripe_stand_in()
    with router:
        first = (await checkout(application, owner)).json()
        with time_machine.travel(datetime.now(UTC) + timedelta(hours=24, seconds=1)):
            headers = await login(client, owner)
            second = await checkout(application, owner, headers=headers)
    assert second.status_code == 201, second.text
    assert second.json()["subscription"]["id"] != first["subscription"]["id"]
    assert second.json()["checkout_url"] != first["checkout_url"]
    assert stripe.keys("/v1/customers") == [f"customer:{owner.account_id}"]  # the account's customer is reused
    assert [body["customer"] for body in stripe.created("/v1/checkout/sessions")] == ["cus_test1", "cus_test1"]
    session.expire_all()
    lapsed = await session.get(Subscription, uuid.UUID(first["subscription"]["id"]))
    assert lapsed.status == "cancelled" and lapsed.cancelled_at is not None
    assert "subscription.checkout_expired" in await actions(session, lapsed.id)


async def test_a_plan_linked_to_a_stripe_price_is_sold_at_that_price(app_factory, session, signup) -> None:
    owner, _ = await card_account(session, signup)
    starter = await session.scalar(select(Plan).where(Plan.code == "starter"))
    starter.stripe_price_id = "price_starter_monthly"
    await session.flush()
    router, stripe = stripe_stand_in()
    with router:
        assert (await checkout(app_factory(**stripe_settings()), owner)).status_code == 201
    [made] = stripe.created("/v1/checkout/sessions")
    assert made["line_items[0][price]"] == "price_starter_monthly"
    assert not any(key.startswith("line_items[0][price_data]") for key in made)


async def test_accounts_not_billed_by_card_still_pay_off_platform(app_factory, session, signup) -> None:
    owner = await signup()
    account = await session.get(Account, uuid.UUID(owner.account_id))
    account.billing_mode = BillingMode.invoice
    await session.flush()
    router, stripe = stripe_stand_in()
    with router:
        response = await checkout(app_factory(**stripe_settings()), owner)
    assert response.status_code == 201, response.text
    assert response.json()["checkout_url"] is None and response.json()["subscription"]["provider"] == "manual"
    assert stripe.requests == []


async def linked_stripe_subscription(session, owner, stripe, *, status: str = "active"):
    """A card subscription past its checkout: linked to a Stripe subscription the stand-in holds."""
    account = await session.get(Account, uuid.UUID(owner.account_id))
    account.provider_customer_id = "cus_linked"
    starter = await session.scalar(select(Plan).where(Plan.code == "starter"))
    now = datetime.now(UTC)
    row = Subscription(account_id=account.id, plan_id=starter.id, provider="stripe", status=status,
                       **sold_terms(starter),
                       current_period_start=now - timedelta(days=1), current_period_end=now + timedelta(days=29),
                       external_id=f"sub_{uuid.uuid4().hex[:10]}")
    session.add(row)
    await session.flush()
    stripe.put({
        "id": row.external_id, "object": "subscription", "customer": "cus_linked", "status": "active",
        "cancel_at_period_end": False, "metadata": {"subscription_id": str(row.id)},
        "items": {"data": [{"current_period_start": int((now - timedelta(days=1)).timestamp()),
                            "current_period_end": int((now + timedelta(days=29)).timestamp())}]},
    })
    return row


async def test_a_stripe_subscription_is_cancelled_at_stripe_and_stripes_answer_is_applied(
    app_factory, session, signup
) -> None:
    owner, _ = await card_account(session, signup)
    application = app_factory(**stripe_settings())
    router, stripe = stripe_stand_in()
    with router:
        row = await linked_stripe_subscription(session, owner, stripe)
        row_id, external_id = row.id, row.external_id
        async with asgi_client(application) as client:
            url = f"/v1/accounts/{owner.account_id}/subscriptions/{row_id}/cancel"
            scheduled = await client.post(url, json={"at": "period_end"}, headers=owner.headers)
            assert scheduled.status_code == 200, scheduled.text
            assert (scheduled.json()["status"], scheduled.json()["cancel_at_period_end"]) == ("active", True)
            assert stripe.objects[external_id]["cancel_at_period_end"] is True
            now = await client.post(url, json={"at": "now"}, headers=owner.headers)
            assert now.status_code == 200 and now.json()["status"] == "cancelled", now.text
            again = await client.post(url, json={"at": "now"}, headers=owner.headers)
    error_of(again, 409, "subscription_cancelled")
    assert stripe.keys(f"/v1/subscriptions/{external_id}") == [
        f"cancel-at-period-end:{external_id}", f"cancel-now:{external_id}"]
    assert {"subscription.cancel_requested", "subscription.synced"} <= set(await actions(session, row_id))


async def test_a_cancellation_stripe_does_not_confirm_changes_nothing(app_factory, session, signup) -> None:
    owner, _ = await card_account(session, signup)
    router, stripe = stripe_stand_in()
    with router:
        row_id = (await linked_stripe_subscription(session, owner, stripe)).id
        stripe.fail_next.append(httpx.ConnectError("Stripe is unreachable"))
        async with asgi_client(app_factory(**stripe_settings())) as client:
            refused = await client.post(f"/v1/accounts/{owner.account_id}/subscriptions/{row_id}/cancel",
                                        json={"at": "now"}, headers=owner.headers)
    error_of(refused, 503, "payment_provider_unavailable")
    session.expire_all()
    assert (await session.get(Subscription, row_id)).status == "active"


async def test_the_billing_portal_is_for_owners_of_accounts_that_paid_by_card(app_factory, session, signup) -> None:
    owner, _ = await card_account(session, signup)
    application = app_factory(**stripe_settings())
    router, stripe = stripe_stand_in()
    with router:
        async with asgi_client(application) as client:
            url = f"/v1/accounts/{owner.account_id}/billing-portal"
            error_of(await client.post(url, headers=owner.headers), 409, "no_payment_customer")
            await linked_stripe_subscription(session, owner, stripe)
            portal = await client.post(url, headers=owner.headers)
    assert portal.status_code == 200, portal.text
    assert portal.json()["url"].startswith("https://billing.stripe.test/p/session/")
    [made] = stripe.created("/v1/billing_portal/sessions")
    assert made["customer"] == "cus_linked" and made["return_url"].endswith("/billing/portal")
    async with asgi_client(app_factory()) as client:  # no Stripe configured here
        error_of(await client.post(f"/v1/accounts/{owner.account_id}/billing-portal", headers=owner.headers),
                 409, "card_payments_not_configured")


async def test_each_plan_version_is_sold_at_its_own_stripe_price_made_once(
    app_factory, client, session, signup, admin
) -> None:
    boss = await admin()
    application = app_factory(**stripe_settings())
    router, stripe = stripe_stand_in()
    with router:
        for _ in range(2):
            owner, _ = await card_account(session, signup)
            assert (await checkout(application, owner)).status_code == 201
        edited = await client.patch("/v1/admin/plans/starter", json={"price_minor": 1200}, headers=boss.headers)
        version = edited.json()["version"]
        owner, _ = await card_account(session, signup)
        assert (await checkout(application, owner)).status_code == 201
    prices = [obj for obj in stripe.objects.values() if obj["object"] == "price"]
    assert sorted((p["lookup_key"], p["unit_amount"]) for p in prices) == [
        (f"jushostit:starter:{version - 1}", 900), (f"jushostit:starter:{version}", 1200)]
    assert len(stripe.created("/v1/products")) == 1  # one Product per plan
    sold = [body["line_items[0][price]"] for body in stripe.created("/v1/checkout/sessions")]
    assert sold[0] == sold[1] != sold[2]

