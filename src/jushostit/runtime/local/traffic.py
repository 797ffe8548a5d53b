"""The bytes the local router relays to and from each instance, counted in the process that serves."""

from __future__ import annotations

import threading
import uuid


class TrafficMeter:
    """Bytes the router relayed per instance since this process started: received from clients (request heads
    and bodies) and sent to them (answers). Counted in the serving process; `boot` tells its counters from a
    previous process's."""

    def __init__(self) -> None:
        self.boot = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._counts: dict[uuid.UUID, list[int]] = {}

    def count(self, instance_id: uuid.UUID, *, received: int = 0, sent: int = 0) -> None:
        with self._lock:
            counts = self._counts.setdefault(instance_id, [0, 0])
            counts[0] += received
            counts[1] += sent

    def totals(self) -> dict[uuid.UUID, tuple[int, int]]:
        """(received, sent) per instance."""
        with self._lock:
            return {instance_id: (rx, tx) for instance_id, (rx, tx) in self._counts.items()}
