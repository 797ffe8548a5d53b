"""The Stripe API client, configured from the settings. Every call goes through JUSHOSTIT_STRIPE_API_BASE (a
local stand-in in tests). No retries inside the client: the jobs that call Stripe retry with backoff, and
every write carries a deterministic idempotency key, so a retry after a crash repeats nothing."""

from __future__ import annotations

from functools import lru_cache

import stripe

from jushostit.config import Settings


def stripe_client(settings: Settings) -> stripe.StripeClient | None:
    """None when Stripe is not configured. One client (and its connection pool) per key and address."""
    if settings.stripe_secret_key is None or not settings.stripe_configured:
        return None
    return _client(settings.stripe_secret_key.get_secret_value(), settings.stripe_api_base)


@lru_cache(maxsize=4)
def _client(api_key: str, api_base: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        max_network_retries=0,
        http_client=stripe.HTTPXClient(allow_sync_methods=True),
    )
