"""Subscription periods: pure date arithmetic, all in UTC (REFERENCE §1 F16)."""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import datetime, timedelta

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
