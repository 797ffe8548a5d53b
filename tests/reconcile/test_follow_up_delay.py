"""How soon a starting instance is looked at again (pure): soon after a start, rarely after a long wait."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from jushostit.models import Instance
from jushostit.reconcile.service import FOLLOW_UP_MAX_SECONDS, FOLLOW_UP_MIN_SECONDS, follow_up_delay

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def starting(status: str, since: timedelta | None) -> Instance:
    return Instance(id=uuid.uuid4(), observed_status=status, created_at=NOW - timedelta(hours=1),
                    last_reconciled_at=None if since is None else NOW - since)


@pytest.mark.parametrize(
    ("instances", "expected"),
    [
        ([starting("stopped", timedelta(days=3))], FOLLOW_UP_MIN_SECONDS),  # started in this very pass
        ([starting("provisioning", timedelta(seconds=10))], 5.0),
        ([starting("provisioning", timedelta(minutes=10))], FOLLOW_UP_MAX_SECONDS),
        ([starting("provisioning", None)], FOLLOW_UP_MAX_SECONDS),  # never reconciled: waiting since its order
        ([starting("provisioning", timedelta(minutes=10)), starting("running", timedelta(days=1))],
         FOLLOW_UP_MIN_SECONDS),  # the most recent start decides
    ],
)
def test_a_starting_instance_is_looked_at_again_soon_then_less_often(instances: list[Instance], expected: float) -> None:
    assert follow_up_delay(instances, NOW) == expected
