"""Our Stripe code against localstripe, a stateful Stripe stand-in served on loopback by a child process: the
customer and product our checkout makes, the subscription and invoice we read back (localstripe speaks an
older API: the period on the subscription, not on its items), cancellations, and its signed webhooks, from our
signature check to the activation of a subscription by our worker.

What localstripe lacks (Prices, Checkout Sessions) is answered by the respx stand-in on Stripe's documented
shapes, during the checkout only (`lacking_at_localstripe`); every other call reaches localstripe."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import respx
from pydantic import SecretStr
from sqlalchemy import select

from jushostit.billing.provider import CheckoutRequest, StripeProvider, payment_providers
from jushostit.config import Settings
from jushostit.models import Account, BillingMode, Payment, Plan, Subscription, WebhookEvent
from tests.live import Live, eventually, served
from tests.localstripe_server import API_KEY, LocalStripe, localstripe
from tests.stripe_stand_in import StripeStandIn
from tests.webhooks.helpers import SECRET

URL = "/v1/webhooks/stripe"
PRODUCT = "jushostit_starter"  # the Product our checkout makes for the starter plan
DELIVERY_SECONDS = 10.0  # localstripe waits a second before it sends each event


@pytest.fixture
def stripe_server(tmp_path: Path) -> Iterator[LocalStripe]:
    with localstripe(tmp_path / "localstripe.log") as running:
        yield running


@contextlib.contextmanager
def lacking_at_localstripe(server: LocalStripe) -> Iterator[StripeStandIn]:
    """Prices and Checkout Sessions answered by the respx stand-in (localstripe has neither); every other call of
    the SDK reaches localstripe."""
    with respx.mock(base_url=server.base_url, assert_all_called=False) as router:
        stand_in = StripeStandIn(router)
        router.route(path__regex=r"^/v1/(prices|checkout/sessions)(/|$)").mock(side_effect=stand_in.answer)
        router.route().pass_through()
        yield stand_in


def pointed_at(server: LocalStripe) -> dict[str, Any]:
    """Settings overrides that send every Stripe call of ours to localstripe."""
    return {"stripe_secret_key": SecretStr(API_KEY), "stripe_api_base": server.base_url}


def provider(settings: Settings, server: LocalStripe) -> StripeProvider:
    stripe = payment_providers(settings.model_copy(update=pointed_at(server))).stripe
    assert stripe is not None
    return stripe


def moment(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, tz=UTC)


def checkout_request(**more: Any) -> CheckoutRequest:
    return CheckoutRequest(**{
        "account_id": uuid.uuid4(), "account_name": "Localstripe Co", "billing_email": "billing@example.com",
        "customer_id": None, "subscription_id": uuid.uuid4(), "plan": Plan(code="starter", name="Starter"),
        "price_minor": 900, "currency": "EUR", "interval": "month", "stripe_price_id": None, "plan_version": 1,
        "success_url": "https://jushostit.test/ok", "cancel_url": "https://jushostit.test/cancel", **more,
    })


def subscribe(server: LocalStripe, customer_id: str, metadata: dict[str, str], *, amount: int = 900,
              currency: str = "eur") -> dict[str, Any]:
    """What a completed Checkout leaves at Stripe: the customer's card, and a monthly subscription of the plan's
    product carrying our metadata (localstripe has Plans where Stripe now has Prices)."""
    server.paying_customer(customer_id)
    plan = server.post("/v1/plans", amount=amount, currency=currency, interval="month", product=PRODUCT)
    return server.post("/v1/subscriptions", customer=customer_id, **{"items[0][plan]": plan["id"]},
                       **{f"metadata[{key}]": value for key, value in metadata.items()})


# --- our provider, reading and writing localstripe ------------------------------------------------------------


async def test_a_checkout_makes_the_accounts_customer_and_the_plans_product_at_localstripe(
    settings: Settings, stripe_server: LocalStripe
) -> None:
    stripe, request = provider(settings, stripe_server), checkout_request()
    with lacking_at_localstripe(stripe_server) as stand_in:
        first = await stripe.start_checkout(request)
        # The plan's next version: a new Price, of the Product found at localstripe (a second one with its id
        # would be refused there, 409).
        second = await stripe.start_checkout(checkout_request(
            account_id=request.account_id, customer_id=first.customer_id, plan_version=2))

    customer = stripe_server.get(f"/v1/customers/{first.customer_id}")
    assert (customer["name"], customer["email"], customer["metadata"]) == (
        "Localstripe Co", "billing@example.com", {"account_id": str(request.account_id)})
    assert [found["id"] for found in stripe_server.get("/v1/customers")["data"]] == [first.customer_id]
    [product] = stripe_server.get("/v1/products")["data"]
    assert (product["id"], product["name"], product["metadata"]) == (PRODUCT, "Starter", {"plan": "starter"})
    assert [(price["product"], price["lookup_key"]) for price in stand_in.created("/v1/prices")] == [
        (PRODUCT, "jushostit:starter:1"), (PRODUCT, "jushostit:starter:2")]
    assert first.price_id != second.price_id
    assert [session["customer"] for session in stand_in.created("/v1/checkout/sessions")] == [first.customer_id] * 2


async def test_a_subscription_at_localstripe_reads_back_active_with_its_period_and_its_paid_invoice(
    settings: Settings, stripe_server: LocalStripe
) -> None:
    ours = uuid.uuid4()
    customer = stripe_server.post("/v1/customers", email="billing@example.com")
    stripe_server.post("/v1/products", id=PRODUCT, name="Starter")
    made = subscribe(stripe_server, customer["id"], {"subscription_id": str(ours)})
    # localstripe answers an API version older than 2025-03-31: the period on the subscription only.
    assert "current_period_start" not in made["items"]["data"][0]
    start, end = moment(made["current_period_start"]), moment(made["current_period_end"])
    assert 28 <= (end - start).days <= 31  # a month

    stripe = provider(settings, stripe_server)
    subscription = await stripe.fetch_subscription(made["id"])
    invoice = await stripe.fetch_invoice(made["latest_invoice"])

    # Compared on what we apply (the dataclasses carry more, answered by the respx tests on today's shapes).
    assert (subscription.external_id, subscription.customer_ref, subscription.status, subscription.period_start,
            subscription.period_end, subscription.cancel_at_period_end, subscription.ended_at,
            subscription.our_subscription_id, subscription.latest_invoice_ref) == (
        made["id"], customer["id"], "active", start, end, False, None, ours, made["latest_invoice"])
    assert (invoice.external_id, invoice.subscription_ref, invoice.status, invoice.period_start, invoice.period_end,
            invoice.amount_paid, invoice.currency) == (made["latest_invoice"], made["id"], "paid", start, end, 900, "EUR")


async def test_a_cancellation_at_the_period_end_then_at_once_is_read_back_from_localstripe(
    settings: Settings, stripe_server: LocalStripe
) -> None:
    customer = stripe_server.post("/v1/customers", email="billing@example.com")
    stripe_server.post("/v1/products", id=PRODUCT, name="Starter")
    made = subscribe(stripe_server, customer["id"], {})
    stripe = provider(settings, stripe_server)

    scheduled = await stripe.cancel(made["id"], at_period_end=True)
    assert (scheduled.status, scheduled.cancel_at_period_end, scheduled.ended_at) == ("active", True, None)
    ended = await stripe.cancel(made["id"], at_period_end=False)
    assert ended.status == "canceled" and ended.ended_at is not None
    assert stripe_server.get(f"/v1/subscriptions/{made['id']}")["status"] == "canceled"


# --- localstripe's signed webhooks, into our inbox -------------------------------------------------------------


class Answers:
    """The app, keeping the status and body of each answer it gives (what the webhook sender was told)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.given: list[tuple[int, dict[str, Any]]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        status, body = 0, b""

        async def keeping(message: Any) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body += message.get("body", b"")
            await send(message)

        await self.app(scope, receive, keeping)
        if scope["type"] == "http":
            self.given.append((status, json.loads(body or b"{}")))


@contextlib.asynccontextmanager
async def listening(inbox: Live, server: LocalStripe, secret: str = SECRET) -> AsyncIterator[Answers]:
    """Our app served on loopback, and localstripe sending it every event signed with `secret`."""
    inbox.configure(**pointed_at(server))
    answers = Answers(inbox.app)
    async with served(answers) as base_url:
        server.send_webhooks("jushostit", f"{base_url}{URL}", secret)
        yield answers


async def stored(inbox: Live, event_ids: Iterable[str]) -> list[WebhookEvent]:
    """Our inbox's rows of these Stripe events."""
    async with inbox.container.database.sessionmaker() as session:
        return list(await session.scalars(select(WebhookEvent).where(WebhookEvent.event_id.in_(list(event_ids)))))


async def test_localstripes_signed_events_are_accepted_and_stored_once_each_and_listed_for_admins(
    inbox: Live, stripe_server: LocalStripe
) -> None:
    admin = await inbox.admin()
    async with listening(inbox, stripe_server) as answers:
        customer = stripe_server.post("/v1/customers", email="billing@example.com")
        stripe_server.paying_customer(customer["id"])  # customer.updated
        sent = {event["id"]: event for event in stripe_server.events()}
        assert sorted(event["type"] for event in sent.values()) == ["customer.created", "customer.updated"]
        await eventually(lambda: len(answers.given) == len(sent), "localstripe's deliveries", DELIVERY_SECONDS)

    assert sorted((status, body["duplicate"]) for status, body in answers.given) == [(200, False)] * len(sent)
    rows = await stored(inbox, sent)
    assert sorted(row.event_id for row in rows) == sorted(sent)  # each once
    assert {(row.event_type, row.object_id, row.customer_ref, row.payload["type"]) for row in rows} == {
        (event["type"], customer["id"], customer["id"], event["type"]) for event in sent.values()
    }
    listed = await inbox.client.get("/v1/admin/webhook-events", headers=admin.headers)
    assert listed.status_code == 200, listed.text
    assert {(item["event_id"], item["type"], item["customer_ref"], item["status"])
            for item in listed.json()["items"] if item["event_id"] in sent} == {
        (key, event["type"], customer["id"], "pending") for key, event in sent.items()}


async def test_localstripes_events_signed_with_a_secret_we_do_not_hold_are_refused_and_store_nothing(
    inbox: Live, stripe_server: LocalStripe
) -> None:
    async with listening(inbox, stripe_server, secret="whsec_not_ours") as answers:
        stripe_server.post("/v1/customers", email="billing@example.com")
        sent = {event["id"] for event in stripe_server.events()}
        await eventually(lambda: len(answers.given) == len(sent), "localstripe's deliveries", DELIVERY_SECONDS)

    assert [(status, body["error"]["code"]) for status, body in answers.given] == [(400, "bad_signature")] * len(sent)
    assert await stored(inbox, sent) == []


async def test_a_card_checkout_paid_at_localstripe_is_activated_by_its_signed_events(
    inbox: Live, stripe_server: LocalStripe
) -> None:
    owner = await inbox.signup("Localstripe Co")
    await inbox.set_billing_mode(owner, BillingMode.card)
    async with listening(inbox, stripe_server):
        with lacking_at_localstripe(stripe_server) as stand_in:
            pending = (await inbox.checkout(owner, "starter"))["subscription"]
        assert (pending["status"], pending["provider"]) == ("pending", "stripe")
        async with inbox.container.database.sessionmaker() as session:
            account = await session.get(Account, uuid.UUID(owner.account_id))
            starter = await session.scalar(select(Plan).where(Plan.code == "starter"))
        assert account is not None and account.provider_customer_id is not None and starter is not None
        # The customer pays on the Checkout page: Stripe makes the subscription with the metadata we gave it.
        [session_made] = stand_in.created("/v1/checkout/sessions")
        metadata = {key.removeprefix("subscription_data[metadata][").removesuffix("]"): value
                    for key, value in session_made.items() if key.startswith("subscription_data[metadata][")}
        made = subscribe(stripe_server, account.provider_customer_id, metadata, amount=starter.price_minor,
                         currency=starter.currency.lower())
        sent = {event["id"]: event["type"] for event in stripe_server.events()}
        await eventually(lambda: processed_all(inbox, sent), "every event to be stored and processed", DELIVERY_SECONDS)

    async with inbox.container.database.sessionmaker() as session:
        subscription = await session.get(Subscription, uuid.UUID(pending["id"]))
        [payment] = await session.scalars(select(Payment).where(Payment.subscription_id == uuid.UUID(pending["id"])))
    assert subscription is not None
    assert (subscription.status, subscription.provider, subscription.external_id) == ("active", "stripe", made["id"])
    assert (subscription.current_period_start, subscription.current_period_end) == (
        moment(made["current_period_start"]), moment(made["current_period_end"]))
    assert (payment.source, payment.external_reference, payment.amount_minor, payment.currency) == (
        "webhook", made["latest_invoice"], starter.price_minor, starter.currency)
    # Each event localstripe sent is stored once and matched to the account by its customer; the two about the
    # subscription are applied, the others kept as types we do not act on.
    matched = account.id
    assert sorted((sent[row.event_id], row.status, row.account_id) for row in await stored(inbox, sent)) == sorted([
        ("customer.created", "ignored", matched), ("customer.updated", "ignored", matched),
        ("product.created", "ignored", None), ("plan.created", "ignored", None),
        ("invoice.created", "ignored", matched), ("payment_intent.succeeded", "ignored", matched),
        ("invoice.payment_succeeded", "processed", matched), ("customer.subscription.created", "processed", matched),
    ])


async def processed_all(inbox: Live, sent: dict[str, str]) -> bool:
    """Runs the worker on what is queued; True once every sent event is stored and no longer pending."""
    await inbox.work()
    rows = await stored(inbox, sent)
    return len(rows) == len(sent) and all(row.status != "pending" for row in rows)
