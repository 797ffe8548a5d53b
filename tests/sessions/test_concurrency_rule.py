"""How many browser sessions an account may have open, by its entitlement level: all its plans include at full
speed, half (at least one) when throttled, none when stopped or below."""

from __future__ import annotations

import pytest

from jushostit.entitlement import Level
from jushostit.sessions.service import concurrency


@pytest.mark.parametrize(("level", "included", "allowed"), [
    (Level.running, 5, 5),
    (Level.running, 0, 0),
    (Level.throttled, 5, 2),
    (Level.throttled, 1, 1),
    (Level.throttled, 0, 0),
    (Level.stopped, 5, 0),
    (Level.expired, 5, 0),
    (Level.deleted, 5, 0),
])
def test_the_concurrency_follows_the_entitlement(level: Level, included: int, allowed: int) -> None:
    assert concurrency(level, included) == allowed
