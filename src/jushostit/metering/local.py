"""The local runtime's collector: each instance's CPU seconds, memory, disk and the bytes the router relayed,
read off this machine at the end of each window.

CPU seconds and bytes are counters: a window gets the difference from the last reading (kept in
meter_counters, written with the window's samples in one transaction, so a crash repeats the window rather than
losing or doubling it). Memory and disk are read at the window's end and taken as held through the window (since
the process started, if that was later): byte-seconds, priced as GiB-hours and GB-months.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.metering.readings import Collected, Metric, Reading, Subject
from jushostit.metering.repository import MeteringRepository
from jushostit.metering.service import counter_delta, positive
from jushostit.runtime.local.driver import LocalDriver
from jushostit.runtime.local.usage import InstanceUsage, read_usage

SOURCE = "local"
SCOPE = "local"


@dataclass(frozen=True)
class CounterReading:
    key: str
    identity: str
    value: Decimal
    fresh: bool  # the counter started within this window: all of its value is the window's


async def collect(session: AsyncSession, driver: LocalDriver, *, start: datetime, end: datetime) -> Collected:
    """The window (start, end] of every instance under the driver's root. Counters are moved on in `session`:
    store the readings in the same transaction."""
    usages = await asyncio.to_thread(read_usage, driver.root)
    counters: list[tuple[InstanceUsage, Metric, CounterReading]] = []
    for usage in usages:
        if usage.process is not None and usage.cpu_seconds is not None and usage.started is not None:
            counters.append((usage, Metric.cpu_core_seconds, CounterReading(
                f"local:{usage.instance_id}:cpu", usage.process, usage.cpu_seconds,
                usage.started >= start.timestamp())))
    # Every instance's bytes are read at every collection, none relayed yet included (zero). So a counter never
    # read before belongs to an instance whose directory is new since the last collection: all of its bytes
    # are this window's (fresh), however early the requests came. An instance removed since it was served has
    # no directory, and so no known account: its last bytes are not counted.
    traffic = driver.traffic.totals()
    for usage in usages:
        received, sent = traffic.get(usage.instance_id, (0, 0))
        for metric, value in ((Metric.network_receive_bytes, received), (Metric.network_transmit_bytes, sent)):
            counters.append((usage, metric, CounterReading(
                f"local:{usage.instance_id}:{metric.value}", driver.traffic.boot, Decimal(value), True)))
    repository = MeteringRepository(session)
    last = await repository.counters(c.key for _, _, c in counters)
    readings: list[Reading] = []
    warnings: list[str] = []
    saved = []
    seconds = Decimal(int((end - start).total_seconds()))

    def reading(usage: InstanceUsage, metric: Metric, quantity: Decimal) -> None:
        if positive(metric, quantity, f"instance {usage.instance_id}", warnings):
            readings.append(Reading(
                SOURCE, f"{SOURCE}:{usage.instance_id}:{metric.value}:{int(end.timestamp())}",
                Subject(account_id=usage.account_id, instance_id=usage.instance_id), metric, start, end, quantity,
            ))

    for usage, metric, counter in counters:
        previous = last.get(counter.key)
        delta = counter_delta((previous.identity, previous.value) if previous else None, counter.identity,
                              counter.value, fresh=counter.fresh)
        reading(usage, metric, delta)
        saved.append({"key": counter.key, "identity": counter.identity, "value": counter.value, "read_at": end})
    for usage in usages:
        reading(usage, Metric.storage_byte_seconds, Decimal(usage.disk_bytes) * seconds)
        if usage.memory_bytes is not None and usage.started is not None:
            held = min(seconds, Decimal(max(0, int(end.timestamp() - max(start.timestamp(), usage.started)))))
            reading(usage, Metric.memory_byte_seconds, Decimal(usage.memory_bytes) * held)
            reading(usage, Metric.memory_peak_bytes, Decimal(usage.memory_bytes))
    await repository.save_counters(saved)
    return Collected(readings, warnings)
