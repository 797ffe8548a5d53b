"""Subscription periods: pure date arithmetic, all in UTC (REFERENCE §1 F16)."""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

FREE_PERIOD = timedelta(days=30)
MONTHS = {"month": 1, "year": 12}


def add_months(moment: datetime, months: int, *, anchor_day: int | None = None) -> datetime:
    """`moment` moved by whole calendar months, on `anchor_day` (default: its own day), clamped to the last
    day of a shorter month: Jan 31 → Feb 28/29 → Mar 31 with anchor_day=31, so periods do not drift."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(anchor_day or moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def period_end(start: datetime, *, interval: str, free: bool, anchor_day: int | None = None) -> datetime:
    """The end of one period beginning at `start`. A free plan's period is 30 days; a paid plan's is its
    interval in calendar months, anchored on `anchor_day`."""
    if free:
        return start + FREE_PERIOD
    return add_months(start, MONTHS[interval], anchor_day=anchor_day)


def anchor_day(boundaries: Iterable[datetime]) -> int:
    """The day consecutive boundaries of monthly periods are anchored on. Each is clamped to the end of a
    short month, but of two consecutive months one has 31 days, so the largest day among them is the anchor.
    (Yearly periods all fall in one month: an anchor past Feb 28 reads as the 28th.)"""
    return max(moment.day for moment in boundaries)


def prorated_difference(old_minor: int, new_minor: int, *, start: datetime, end: datetime, at: datetime) -> int:
    """What changing a period's price from `old_minor` to `new_minor` at `at` owes (positive) or credits
    (negative) for the rest of the period [start, end): the difference times the share of the period left, to
    the nearest minor unit (half to even). Nothing before the period or after it."""
    tick = timedelta(microseconds=1)
    total = (end - start) // tick
    left = min(max((end - at) // tick, 0), total)
    return round(Fraction((new_minor - old_minor) * left, total)) if total > 0 else 0


# --- the calendar month in UTC: what budgets, their alerts and usage charges count in ----------------------


def month_of(moment: datetime | date) -> date:
    """The first day of the month `moment` is in (a datetime is taken in UTC)."""
    if isinstance(moment, datetime):
        moment = moment.astimezone(UTC)
    return date(moment.year, moment.month, 1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def as_instant(day: date) -> datetime:
    """Midnight UTC at the start of `day`."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
