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

    async def start_checkout(self, account: Account, plan: Plan) -> CheckoutResult:
        """Begin paying for `plan`; the subscription stays pending until the payment is confirmed."""
        ...


class ManualProvider:
    """Paid off-platform (bank transfer, invoice, a deal): a platform admin marks the subscription paid."""

    name = "manual"

    async def start_checkout(self, account: Account, plan: Plan) -> CheckoutResult:
        return CheckoutResult()


_MANUAL = ManualProvider()


def payment_provider() -> PaymentProvider:
    """The provider checkouts use (a FastAPI dependency, so the choice lives in one place)."""
    return _MANUAL
