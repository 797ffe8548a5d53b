"""Prices of usage: what the plan includes is taken off once a month, unit prices are exact Decimals, the days
of a month add up to the month exactly, and the Stripe report's running total bills the same integer total
however the month's usage arrives."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jushostit.catalog.spec import UsagePricing
from jushostit.metering.pricing import (
    billable_units,
    charge_minor,
    daily_shares,
    markup_charge_minor,
    rounded,
)
from jushostit.metering.readings import Metric
from jushostit.metering.stripe_usage import report_value, whole_units

GIB = 2**30
PRICING = UsagePricing(
    included={"core_hours": Decimal(10), "gb_transferred": Decimal(1)},
    unit_price_minor={"core_hours": Decimal("1.5"), "gib_hours": Decimal("0.25"), "gb_transferred": Decimal(4),
                      "gb_month_stored": Decimal(10), "session_minutes": Decimal("0.8")},
)


def test_billable_units_convert_each_metric_to_its_priced_unit() -> None:
    units = billable_units({
        Metric.cpu_core_seconds: Decimal(7200), Metric.memory_byte_seconds: Decimal(3 * GIB * 3600),
        Metric.network_transmit_bytes: Decimal(2_500_000_000), Metric.network_receive_bytes: Decimal(10**12),
        Metric.storage_byte_seconds: Decimal(5 * 10**9 * 30 * 86400), Metric.session_seconds: Decimal(90),
    })
    assert units == {"core_hours": 2, "gib_hours": 3, "gb_transferred": Decimal("2.5"), "gb_month_stored": 5,
                     "session_minutes": Decimal("1.5")}  # what instances received is measured, not charged


def test_usage_within_what_the_plan_includes_costs_nothing_and_beyond_it_costs_the_unit_price() -> None:
    within = {Metric.cpu_core_seconds: Decimal(10 * 3600), Metric.network_transmit_bytes: Decimal(10**9)}
    assert charge_minor(within, PRICING, currency="EUR", opencost_currency="USD") == 0
    beyond = {Metric.cpu_core_seconds: Decimal(13 * 3600), Metric.network_transmit_bytes: Decimal(3 * 10**9),
              Metric.memory_byte_seconds: Decimal(GIB * 3600 * 4), Metric.session_seconds: Decimal(600)}
    # 3 core-hours x 1.5 + 2 GB x 4 + 4 GiB-hours x 0.25 + 10 minutes x 0.8
    assert charge_minor(beyond, PRICING, currency="EUR", opencost_currency="USD") == Decimal("4.5") + 8 + 1 + 8


def test_an_opencost_markup_prices_opencosts_cost_in_the_plans_currency_only() -> None:
    marked = UsagePricing(opencost_markup_percent=Decimal(25))
    usage = {Metric.cost: Decimal("1.23456"), Metric.cpu_core_seconds: Decimal(10**6)}
    assert charge_minor(usage, marked, currency="USD", opencost_currency="USD") == Decimal("154.32000")
    assert charge_minor(usage, marked, currency="EUR", opencost_currency="USD") == 0  # no exchange rates here
    assert markup_charge_minor(Decimal(2), Decimal(0), "JPY") == 2  # a zero-decimal currency


def test_a_plan_prices_usage_by_unit_prices_or_by_markup_not_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        UsagePricing(unit_price_minor={"core_hours": Decimal(1)}, opencost_markup_percent=Decimal(10))


def test_no_pricing_charges_nothing() -> None:
    assert charge_minor({Metric.cpu_core_seconds: Decimal(10**9)}, None, currency="EUR", opencost_currency="EUR") == 0


def test_daily_shares_add_up_to_the_months_rounded_charge() -> None:
    cumulative = [Decimal("0.4"), Decimal("0.9"), Decimal("1.4"), Decimal("2.6")]
    shares = daily_shares(cumulative)
    assert shares == [0, 1, 0, 2] and sum(shares) == rounded(cumulative[-1]) == 3


@settings(max_examples=300, deadline=None)
@given(st.lists(st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False, allow_infinity=False),
                min_size=1, max_size=40))
def test_reporting_cumulative_usage_in_any_number_of_chunks_bills_the_same_integer_total(chunks: list[Decimal]) -> None:
    reported, cumulative, errors = 0, Decimal(0), []
    for chunk in chunks:
        cumulative += chunk
        reported += report_value(cumulative, reported)
        errors.append(cumulative - reported)
    assert reported == whole_units(cumulative)  # the same as reporting the month in one go
    assert all(0 <= error < 1 for error in errors)  # never more than used, never a unit behind, never growing


@settings(max_examples=200, deadline=None)
@given(st.lists(st.decimals(min_value=0, max_value=10**5, places=3, allow_nan=False, allow_infinity=False),
                min_size=1, max_size=31))
def test_the_days_of_a_month_always_add_up_to_the_month(days: list[Decimal]) -> None:
    cumulative, through = Decimal(0), []
    for day in days:
        cumulative += day
        through.append(cumulative)
    assert sum(daily_shares(through)) == rounded(cumulative)
