"""What every collector produces: readings, each one quantity of one metric over one window, for one subject.

A reading's `source_id` is unique within its source and the same every time the same window is read again, so
storing a window twice stores it once. Quantities are Decimal, parsed from the source's own strings
(`Decimal(str)`), never float.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


class Metric(enum.StrEnum):
    cpu_core_seconds = "cpu_core_seconds"
    memory_byte_seconds = "memory_byte_seconds"  # the working set integrated over the window (GiB-hours)
    memory_peak_bytes = "memory_peak_bytes"  # the largest working set seen in the window
    network_receive_bytes = "network_receive_bytes"
    network_transmit_bytes = "network_transmit_bytes"
    storage_byte_seconds = "storage_byte_seconds"  # disk or volume used, integrated over the window (GB-months)
    cost = "cost"  # a cost figure from OpenCost, in its currency's major units
    session_seconds = "session_seconds"  # browser sessions


# Metrics that add up across windows; the peak is a maximum.
PEAK_METRICS = frozenset({Metric.memory_peak_bytes})


@dataclass(frozen=True)
class Subject:
    """Whose usage a reading is. Kubernetes sources name a namespace (and pod); the local runtime knows the
    account and instance from its own layout. Mapping a namespace to an account is the metering service's."""

    namespace: str | None = None
    pod: str | None = None
    account_id: uuid.UUID | None = None
    instance_id: uuid.UUID | None = None

    @property
    def label(self) -> str:
        """How an unmapped subject is listed for admins."""
        if self.namespace is not None:
            return f"{self.namespace}/{self.pod}" if self.pod else self.namespace
        return f"{self.account_id}/{self.instance_id}"


@dataclass(frozen=True)
class Reading:
    source: str  # local | prometheus | opencost | sessions
    source_id: str  # unique within the source, the same on every re-read of the same window
    subject: Subject
    metric: Metric
    start: datetime
    end: datetime
    quantity: Decimal
    scope: str = ""  # the cluster a Kubernetes reading came from (its id); empty for the local runtime


@dataclass
class Collected:
    """One collection's result: its readings, and what was skipped and why (a NaN, a value of no subject)."""

    readings: list[Reading]
    warnings: list[str]


class SourceUnavailable(Exception):
    """The source could not be read for this window (down, refused, answered nonsense). The window is not
    recorded at all, so the next successful run reads it: an outage leaves no zero behind."""
