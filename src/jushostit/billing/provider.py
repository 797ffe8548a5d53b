"""Payment providers. Callers see only `PaymentProvider` and ask it for capabilities, never for its name.

A provider starts the payment of a paid plan; it never activates anything itself. Activation is a fact
recorded when the payment is confirmed (an admin marking it paid for `manual`, Stripe's objects for `stripe`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import stripe
from stripe.params import CustomerCreateParams

from jushostit.billing.stripe_api import stripe_client
from jushostit.config import Settings
from jushostit.models import BillingMode, Plan


@dataclass(frozen=True)
class CheckoutRequest:
    """What a provider needs to start the payment of one pending subscription (read before the call)."""

    account_id: uuid.UUID
    account_name: str
    billing_email: str | None
    customer_id: str | None  # the provider's customer of the account, when it has one already
    subscription_id: uuid.UUID
    plan: Plan  # its code and name; the price is the subscription's own (the version it was sold)
    price_minor: int
    currency: str
    interval: str
    stripe_price_id: str | None
    plan_version: int
    success_url: str
    cancel_url: str


@dataclass(frozen=True)
class PackCheckoutRequest:
    """What a provider needs to take the one-off payment of a credit pack (read before the call)."""

    account_id: uuid.UUID
    account_name: str
    billing_email: str | None
    customer_id: str | None
    purchase_id: uuid.UUID
    pack_code: str
    pack_name: str
    price_minor: int
    currency: str
    success_url: str
    cancel_url: str


@dataclass(frozen=True)
class CheckoutResult:
    checkout_url: str | None = None  # where the customer pays (Stripe Checkout); None when paid off-platform
    external_id: str | None = None  # the provider's id for the checkout, when it has one
    customer_id: str | None = None  # the provider's customer it was made for
    expires_at: datetime | None = None  # when the checkout page stops taking the payment
    price_id: str | None = None  # the provider's price the subscription is sold at


@dataclass(frozen=True)
class ProviderCheckout:
    """A hosted checkout as the provider sees it now."""

    external_id: str
    status: str  # open | complete | expired
    subscription_ref: str | None  # the provider's subscription it created, once complete
    our_subscription_id: uuid.UUID | None  # from its metadata
    our_purchase_id: uuid.UUID | None = None  # a credit pack's checkout: our purchase, from its metadata
    payment_status: str = "unpaid"  # paid | unpaid (a bank debit still clearing) | no_payment_required
    payment_ref: str | None = None  # the provider's payment (Stripe's PaymentIntent)


@dataclass(frozen=True)
class ProviderSubscription:
    """A subscription as the provider sees it now: the truth an event only hints at."""

    external_id: str
    customer_ref: str | None
    status: str  # Stripe's: incomplete | incomplete_expired | trialing | active | past_due | unpaid | paused | canceled
    period_start: datetime
    period_end: datetime
    cancel_at_period_end: bool
    ended_at: datetime | None
    our_subscription_id: uuid.UUID | None  # from its metadata
    latest_invoice_ref: str | None = None  # the invoice of its current period
    item_ref: str | None = None  # its one item (the plan sold)
    price_ref: str | None = None  # the price that item is sold at: which plan, whoever changed it (the portal too)
    price_lookup_key: str | None = None
    pending_update: bool = False  # a plan change waiting for its payment (Stripe's `pending_update`)


@dataclass(frozen=True)
class ProviderInvoice:
    external_id: str
    subscription_ref: str | None
    status: str  # draft | open | paid | uncollectible | void
    period_start: datetime  # the service period it bills (its line's period)
    period_end: datetime
    amount_paid: int  # minor units
    currency: str


class PaymentProvider(Protocol):
    name: str
    # Whether a customer may extend a paid plan's period with no payment recorded for it (a provider that
    # bills the period itself afterwards would). None does today: a paid period is renewed by its payment.
    customer_can_renew_without_payment: bool
    # Whether the customer pays on the provider's own page: the checkout then calls the provider outside the
    # transaction that records the pending subscription, and answers its `checkout_url`.
    hosted_checkout: bool

    async def start_checkout(self, request: CheckoutRequest) -> CheckoutResult:
        """Begin paying for the plan; the subscription stays pending until the payment is confirmed. Safe to
        call again for the same subscription: it answers the same checkout."""
        ...

    async def start_pack_checkout(self, request: PackCheckoutRequest) -> CheckoutResult:
        """Begin the one-off payment of a credit pack; nothing is granted until it is confirmed. Safe to call
        again for the same purchase."""
        ...


class ProviderRecords(Protocol):
    """A provider whose own records are the truth about what was paid (Stripe): read by id, never trusted from
    an event's payload."""

    name: str

    async def fetch_checkout(self, external_id: str) -> ProviderCheckout: ...

    async def fetch_subscription(self, external_id: str) -> ProviderSubscription: ...

    async def fetch_invoice(self, external_id: str) -> ProviderInvoice: ...

    async def cancel(self, external_id: str, *, at_period_end: bool) -> ProviderSubscription:
        """End the provider's subscription now, or schedule its end at the period end; answers it as it is then."""
        ...

    async def change_plan(self, external_id: str, plan: Plan, *, change_key: str) -> ProviderSubscription:
        """Sell the subscription at `plan`'s current version from now on, prorated by the provider; answers it
        as it is then. `change_key` names this one change (a retry of it repeats nothing)."""
        ...

    async def portal_url(self, customer_id: str, return_url: str) -> str:
        """Where the customer manages their card, invoices and subscription at the provider."""
        ...


class ManualProvider:
    """Paid off-platform (bank transfer, invoice, a deal): a platform admin marks the subscription paid."""

    name = "manual"
    customer_can_renew_without_payment = False
    hosted_checkout = False

    async def start_checkout(self, request: CheckoutRequest) -> CheckoutResult:
        return CheckoutResult()

    async def start_pack_checkout(self, request: PackCheckoutRequest) -> CheckoutResult:
        return CheckoutResult()


class StripeProvider:
    """Stripe Checkout (mode subscription). Every write carries an idempotency key derived from our own ids,
    so a retry, a double click or a crash between the call and our record of it creates nothing twice
    (REFERENCE §1 F3): the customer is keyed on the account, the Checkout Session on our subscription."""

    name = "stripe"
    customer_can_renew_without_payment = False
    hosted_checkout = True

    def __init__(self, client: stripe.StripeClient) -> None:
        self.client = client

    async def start_checkout(self, request: CheckoutRequest) -> CheckoutResult:
        customer_id = request.customer_id or await self._customer(request)
        plan = request.plan
        metadata = {
            "account_id": str(request.account_id), "plan": plan.code, "subscription_id": str(request.subscription_id),
        }
        # A price an admin linked, or the plan version's own (created once): never an operator's copy-paste.
        price_id = request.stripe_price_id or await self._price(
            request.plan, request.plan_version, request.price_minor, request.currency, request.interval)
        session = await self.client.v1.checkout.sessions.create_async(
            {
                "mode": "subscription",
                "customer": customer_id,
                "client_reference_id": str(request.account_id),
                "line_items": [{"quantity": 1, "price": price_id}],
                "metadata": metadata,
                "subscription_data": {"metadata": metadata},
                "success_url": request.success_url,
                "cancel_url": request.cancel_url,
            },
            {"idempotency_key": f"checkout:{request.subscription_id}"},
        )
        return CheckoutResult(
            checkout_url=session.url, external_id=session.id, customer_id=customer_id,
            expires_at=datetime.fromtimestamp(session.expires_at, tz=UTC) if session.expires_at else None,
            price_id=price_id,
        )

    async def start_pack_checkout(self, request: PackCheckoutRequest) -> CheckoutResult:
        customer_id = request.customer_id or await self._customer(request)
        metadata = {"account_id": str(request.account_id), "pack": request.pack_code,
                    "purchase_id": str(request.purchase_id)}
        session = await self.client.v1.checkout.sessions.create_async(
            {
                "mode": "payment",
                "customer": customer_id,
                "client_reference_id": str(request.account_id),
                "line_items": [{"quantity": 1, "price_data": {
                    "currency": request.currency.lower(), "unit_amount": request.price_minor,
                    "product_data": {"name": request.pack_name, "metadata": {"pack": request.pack_code}}}}],
                "metadata": metadata,
                "payment_intent_data": {"metadata": metadata},
                "success_url": request.success_url,
                "cancel_url": request.cancel_url,
            },
            {"idempotency_key": f"pack-checkout:{request.purchase_id}"},
        )
        return CheckoutResult(
            checkout_url=session.url, external_id=session.id, customer_id=customer_id,
            expires_at=datetime.fromtimestamp(session.expires_at, tz=UTC) if session.expires_at else None,
        )

    async def _price(self, plan: Plan, version: int, price_minor: int, currency: str, interval: str) -> str:
        """The Stripe Price of a plan version: found by its lookup key `jushostit:<plan>:<version>`, else created
        (with the plan's Product, id `jushostit_<plan>`, created once) under idempotency keys, so two checkouts
        racing make one."""
        lookup_key = price_lookup_key(plan.code, version)
        found = await self.client.v1.prices.list_async({"lookup_keys": [lookup_key], "limit": 1})
        if found.data:
            return found.data[0].id
        product_id = f"jushostit_{plan.code}"
        try:
            await self.client.v1.products.retrieve_async(product_id)
        except stripe.InvalidRequestError:
            await self.client.v1.products.create_async(
                {"id": product_id, "name": plan.name, "metadata": {"plan": plan.code}},
                {"idempotency_key": f"product:{plan.code}"},
            )
        price = await self.client.v1.prices.create_async(
            {
                "product": product_id, "currency": currency.lower(), "unit_amount": price_minor,
                "recurring": {"interval": "year" if interval == "year" else "month"},
                "lookup_key": lookup_key, "metadata": {"plan": plan.code, "version": str(version)},
            },
            {"idempotency_key": f"price:{lookup_key}"},
        )
        return price.id

    async def fetch_checkout(self, external_id: str) -> ProviderCheckout:
        raw = (await self.client.v1.checkout.sessions.retrieve_async(external_id)).to_dict()
        return ProviderCheckout(
            external_id=str(raw["id"]), status=str(raw["status"]), subscription_ref=_ref(raw.get("subscription")),
            our_subscription_id=_our_id(raw.get("metadata")),
            our_purchase_id=_our_id(raw.get("metadata"), "purchase_id") if raw.get("mode") == "payment" else None,
            payment_status=str(raw.get("payment_status") or "unpaid"), payment_ref=_ref(raw.get("payment_intent")),
        )

    async def fetch_subscription(self, external_id: str) -> ProviderSubscription:
        found = await self.client.v1.subscriptions.retrieve_async(external_id)
        raw = found.to_dict()
        # Since API 2025-03-31 the period lives on the subscription's items; older payloads carry it on top.
        items = (raw.get("items") or {}).get("data") or [{}]
        start = items[0].get("current_period_start") or raw.get("current_period_start")
        end = items[0].get("current_period_end") or raw.get("current_period_end")
        ended = raw.get("ended_at") or raw.get("canceled_at")
        price = items[0].get("price")
        return ProviderSubscription(
            external_id=found.id, customer_ref=_ref(raw.get("customer")),
            status=str(raw["status"]), period_start=_moment(start), period_end=_moment(end),
            cancel_at_period_end=bool(raw.get("cancel_at_period_end")),
            ended_at=_moment(ended) if ended else None, our_subscription_id=_our_id(raw.get("metadata")),
            latest_invoice_ref=_ref(raw.get("latest_invoice")), item_ref=_ref(items[0].get("id")),
            price_ref=_ref(price), price_lookup_key=price.get("lookup_key") if isinstance(price, dict) else None,
            pending_update=bool(raw.get("pending_update")),
        )

    async def cancel(self, external_id: str, *, at_period_end: bool) -> ProviderSubscription:
        if at_period_end:
            await self.client.v1.subscriptions.update_async(
                external_id, {"cancel_at_period_end": True},
                {"idempotency_key": f"cancel-at-period-end:{external_id}"},
            )
        else:
            await self.client.v1.subscriptions.cancel_async(
                external_id, options={"idempotency_key": f"cancel-now:{external_id}"}
            )
        return await self.fetch_subscription(external_id)

    async def change_plan(self, external_id: str, plan: Plan, *, change_key: str) -> ProviderSubscription:
        current = await self.fetch_subscription(external_id)
        price_id = plan.stripe_price_id or await self._price(
            plan, plan.version, plan.price_minor, plan.currency, plan.interval)
        if current.price_ref == price_id:
            return current
        # The difference is invoiced at once (an upgrade is charged now, a downgrade's unused time is credited to
        # the customer's balance), and the new price applies only once that invoice is paid: a failed upgrade
        # payment leaves the old plan in place rather than a plan nobody paid for.
        await self.client.v1.subscriptions.update_async(
            external_id,
            {"items": [{"id": current.item_ref or "", "price": price_id}],
             "proration_behavior": "always_invoice", "payment_behavior": "pending_if_incomplete"},
            {"idempotency_key": change_key},
        )
        return await self.fetch_subscription(external_id)

    async def portal_url(self, customer_id: str, return_url: str) -> str:
        portal = await self.client.v1.billing_portal.sessions.create_async(
            {"customer": customer_id, "return_url": return_url}
        )
        return portal.url

    async def fetch_invoice(self, external_id: str) -> ProviderInvoice:
        found = await self.client.v1.invoices.retrieve_async(external_id)
        raw = found.to_dict()
        parent = ((raw.get("parent") or {}).get("subscription_details") or {}).get("subscription")
        subscription = parent or raw.get("subscription")
        lines = (raw.get("lines") or {}).get("data") or [{}]
        period = lines[0].get("period") or {"start": raw["period_start"], "end": raw["period_end"]}
        return ProviderInvoice(
            external_id=found.id, subscription_ref=_ref(subscription),
            status=str(raw["status"]), period_start=_moment(period["start"]), period_end=_moment(period["end"]),
            amount_paid=int(raw.get("amount_paid") or 0), currency=str(raw["currency"]).upper(),
        )

    async def _customer(self, request: CheckoutRequest | PackCheckoutRequest) -> str:
        params: CustomerCreateParams = {
            "name": request.account_name, "metadata": {"account_id": str(request.account_id)},
        }
        if request.billing_email:
            params["email"] = request.billing_email
        customer = await self.client.v1.customers.create_async(
            params, {"idempotency_key": f"customer:{request.account_id}"}
        )
        return customer.id


def price_lookup_key(plan_code: str, version: int) -> str:
    return f"jushostit:{plan_code}:{version}"


def plan_of_lookup_key(lookup_key: str | None) -> tuple[str, int] | None:
    """The (plan, version) one of our prices is for, from its lookup key; None for a price we did not make."""
    prefix, _, rest = (lookup_key or "").partition(":")
    code, _, version = rest.rpartition(":")
    return (code, int(version)) if prefix == "jushostit" and code and version.isdigit() else None


def _moment(unix: Any) -> datetime:
    return datetime.fromtimestamp(int(unix), tz=UTC)


def _ref(value: Any) -> str | None:
    """An expandable field: an id, or the object (a dict with its id), or nothing."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else None


def _our_id(metadata: Any, key: str = "subscription_id") -> uuid.UUID | None:
    value = metadata.get(key) if isinstance(metadata, dict) else None
    try:
        return uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        return None


_MANUAL = ManualProvider()


@dataclass(frozen=True)
class PaymentProviders:
    """The providers this installation runs: `card` accounts pay through Stripe when it is configured; every
    other billing mode pays off-platform."""

    stripe: StripeProvider | None

    def for_mode(self, billing_mode: BillingMode) -> PaymentProvider:
        if billing_mode == BillingMode.card and self.stripe is not None:
            return self.stripe
        return _MANUAL

    def records(self, name: str) -> ProviderRecords | None:
        """The provider whose records are the truth of the subscriptions it runs (changes go through it); None
        for subscriptions paid off-platform, which are ours alone to change."""
        return self.stripe if self.stripe is not None and name == self.stripe.name else None

    def named(self, name: str) -> PaymentProvider | None:
        """The provider a subscription was taken out with; None for one this installation does not run."""
        if name == _MANUAL.name:
            return _MANUAL
        if self.stripe is not None and name == self.stripe.name:
            return self.stripe
        return None


def payment_providers(settings: Settings) -> PaymentProviders:
    client = stripe_client(settings)
    return PaymentProviders(StripeProvider(client) if client else None)
