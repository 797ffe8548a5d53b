"""Payment providers. Callers see only `PaymentProvider`: Stripe plugs in later without touching them.

A provider starts the payment of a paid plan; it never activates anything itself. Activation is a fact
recorded when the payment is confirmed (an admin marking it paid for `manual`, a webhook for Stripe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from jushostit.models import Account, Plan


@dataclass(frozen=True)
class CheckoutResult:
    checkout_url: str | None = None  # where the customer pays (Stripe Checkout); None when paid off-platform
    external_id: str | None = None  # the provider's id for the checkout, when it has one


class PaymentProvider(Protocol):
    name: str
    # Whether a customer may extend a paid plan's period with no payment recorded for it (a provider that
    # bills the period itself afterwards would). None does today: a paid period is renewed by its payment.
    customer_can_renew_without_payment: bool

    async def start_checkout(self, account: Account, plan: Plan) -> CheckoutResult:
        """Begin paying for `plan`; the subscription stays pending until the payment is confirmed."""
        ...


class ManualProvider:
    """Paid off-platform (bank transfer, invoice, a deal): a platform admin marks the subscription paid."""

    name = "manual"
    customer_can_renew_without_payment = False

    async def start_checkout(self, account: Account, plan: Plan) -> CheckoutResult:
        return CheckoutResult()


_MANUAL = ManualProvider()


def payment_provider() -> PaymentProvider:
    """The provider checkouts use (a FastAPI dependency, so the choice lives in one place)."""
    return _MANUAL


_BY_NAME: dict[str, PaymentProvider] = {_MANUAL.name: _MANUAL}


def provider_named(name: str) -> PaymentProvider | None:
    """The provider a subscription was taken out with; None for one this installation does not run."""
    return _BY_NAME.get(name)
