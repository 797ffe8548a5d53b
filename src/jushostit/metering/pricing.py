"""Prices of usage: pure functions from quantities and a plan's usage pricing to minor units.

A month's charge is priced from the month's cumulative quantities (what the plan includes is taken off once a
month, not once a day); a day's share is the month's charge through that day less the charge through the day
before, so the days of a month add up to the month exactly. Decimal throughout; minor units are rounded once,
half to even, at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal

from jushostit.catalog.spec import UsageDimension, UsagePricing
from jushostit.kit import money
from jushostit.metering.readings import Metric

SECONDS_PER_HOUR = Decimal(3600)
GIB = Decimal(2**30)
GB = Decimal(10**9)
# A GB-month is a GB kept for 30 days.
SECONDS_PER_STORAGE_MONTH = Decimal(30 * 86400)


def billable_units(quantities: Mapping[str, Decimal]) -> dict[UsageDimension, Decimal]:
    """The priced dimensions of a set of quantities. Transfer is what instances sent (egress): what they
    received is measured and shown, not charged."""
    def q(metric: Metric) -> Decimal:
        return quantities.get(metric, Decimal(0))

    return {
        "core_hours": q(Metric.cpu_core_seconds) / SECONDS_PER_HOUR,
        "gib_hours": q(Metric.memory_byte_seconds) / GIB / SECONDS_PER_HOUR,
        "gb_transferred": q(Metric.network_transmit_bytes) / GB,
        "gb_month_stored": q(Metric.storage_byte_seconds) / GB / SECONDS_PER_STORAGE_MONTH,
        "session_minutes": q(Metric.session_seconds) / 60,
    }


def unit_charge_minor(quantities: Mapping[str, Decimal], pricing: UsagePricing) -> Decimal:
    """Exact minor units (not rounded) for usage beyond what the plan includes, at the plan's unit prices."""
    total = Decimal(0)
    for dimension, units in billable_units(quantities).items():
        price = pricing.unit_price_minor.get(dimension)
        if price:
            total += max(Decimal(0), units - pricing.included.get(dimension, Decimal(0))) * price
    return total


def markup_charge_minor(cost_major: Decimal, markup_percent: Decimal, currency: str) -> Decimal:
    """Exact minor units for an OpenCost cost (major units of the plan's currency) with the plan's markup."""
    return (cost_major * (1 + markup_percent / 100)).scaleb(money.exponent(currency))


def charge_minor(quantities: Mapping[str, Decimal], pricing: UsagePricing | None, *, currency: str,
                 opencost_currency: str) -> Decimal:
    """What a month's cumulative quantities cost, exact. OpenCost's cost counts only when the plan prices usage
    by markup and OpenCost reports in the plan's currency (no exchange rates here)."""
    if pricing is None:
        return Decimal(0)
    if pricing.opencost_markup_percent is not None:
        if opencost_currency != currency:
            return Decimal(0)
        return markup_charge_minor(quantities.get(Metric.cost, Decimal(0)), pricing.opencost_markup_percent,
                                   currency)
    return unit_charge_minor(quantities, pricing)


def rounded(amount_minor: Decimal) -> int:
    return int(amount_minor.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def daily_shares(cumulative_charges: list[Decimal]) -> list[int]:
    """Each day's share of a month's charge, given the exact charge through each day in order: the rounded
    difference of rounded cumulative charges, so the shares add up to the month's rounded charge exactly."""
    shares, before = [], 0
    for charge in cumulative_charges:
        through = rounded(charge)
        shares.append(through - before)
        before = through
    return shares
