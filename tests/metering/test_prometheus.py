"""The Prometheus collector against a real Prometheus (Debian's package) holding synthetic cAdvisor and kubelet
series, read through the real httpx client; every expected quantity is worked out by hand from the samples.

Counters are sampled every 15 s with a sample on every window boundary: `increase` then needs no extrapolation
(it extrapolates only towards a window edge that has no sample) and gives exact numbers. Gauges are sampled at
5 s past each 15 s, off the boundaries, so every window holds exactly four of them in Prometheus 2 (whose range
selectors also hold a sample lying exactly on the window's start) as in Prometheus 3.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from jushostit.metering import prometheus
from jushostit.metering.readings import Collected, Metric, Reading, SourceUnavailable, Subject
from tests.metering.prometheus_server import PrometheusServer, Series, running_prometheus

STEP = 60
MiB = 1 << 20
GiB = 1 << 30
SCOPE = "cluster-7"

# The main scenario: three 60 s windows after T0, two namespaces.
T0 = datetime(2024, 1, 1, tzinfo=UTC)
# Values no usage is made of (NaN, infinite, negative, no namespace), one window after T1.
T1 = T0 + timedelta(days=1)
# One counter sampled every second for more 1 s windows than one query may ask for, after T2.
T2 = T0 + timedelta(days=2)
CHUNKED_WINDOWS = 11_050


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


def counter_samples(start: datetime, values: list[float]) -> list[tuple[int, str]]:
    """A counter's values every 15 s from `start`, on the window boundaries."""
    return [(unix(start) + 15 * k, str(value)) for k, value in enumerate(values)]


def gauge_samples(start: datetime, values: list[float | str]) -> list[tuple[int, str]]:
    """A gauge's values every 15 s from 5 s past `start`, off the window boundaries: four per 60 s window."""
    return [(unix(start) + 5 + 15 * k, str(value)) for k, value in enumerate(values)]


def ramp(first: float, increment: float, count: int) -> list[float]:
    return [first + increment * k for k in range(count)]


def container(name: str, namespace: str, pod: str, container_name: str, samples: list[tuple[int, str]]) -> Series:
    kind = "counter" if name.endswith("_total") else "gauge"
    return Series(name, kind, {"namespace": namespace, "pod": pod, "container": container_name}, samples)


CPU = "container_cpu_usage_seconds_total"
MEMORY = "container_memory_working_set_bytes"
RECEIVED = "container_network_receive_bytes_total"
SENT = "container_network_transmit_bytes_total"
VOLUME = "kubelet_volume_stats_used_bytes"


def interface(name: str, pod: str, interface_name: str, samples: list[tuple[int, str]]) -> Series:
    labels = {"namespace": "shop", "pod": pod, "interface": interface_name, "container": ""}
    return Series(name, "counter", labels, samples)


def volume(namespace: str, claim: str, samples: list[tuple[int, str]]) -> Series:
    return Series(VOLUME, "gauge", {"namespace": namespace, "persistentvolumeclaim": claim}, samples)


def main_scenario() -> list[Series]:
    """Three windows after T0: 13 counter samples (T0 … T0+180 s), 12 gauge samples (T0+5 s … T0+170 s)."""
    # web-2's container restarts between T0+75 s and T0+90 s: its new counter has counted 2 core-seconds by
    # T0+90 s.
    restarted = [500, 503, 506, 509, 512, 515, 2, 5, 8, 11, 14, 17, 20]
    web_1_app_memory = [100, 300, 200, 600, 400, 400, 400, 400, 50, 50, 1000, 100]
    web_1_sidecar_memory = [20, 20, 20, 20, 10, 30, 10, 30, 60, 20, 20, 20]
    return [
        container(CPU, "shop", "web-1", "app", counter_samples(T0, ramp(1000, 7.5, 13))),
        container(CPU, "shop", "web-1", "sidecar", counter_samples(T0, ramp(40, 0.75, 13))),
        # The pod's own cgroup: the sum of its containers, which the collector must not count again.
        container(CPU, "shop", "web-1", "", counter_samples(T0, ramp(1040, 8.25, 13))),
        container(CPU, "shop", "web-2", "app", counter_samples(T0, restarted)),
        container(CPU, "blog", "blog-0", "app", counter_samples(T0, ramp(0, 1.5, 13))),
        container(MEMORY, "shop", "web-1", "app", gauge_samples(T0, [v * MiB for v in web_1_app_memory])),
        container(MEMORY, "shop", "web-1", "sidecar", gauge_samples(T0, [v * MiB for v in web_1_sidecar_memory])),
        container(MEMORY, "shop", "web-1", "", gauge_samples(T0, [9999 * MiB] * 12)),
        container(MEMORY, "blog", "blog-0", "app", gauge_samples(T0, [64 * MiB] * 12)),
        interface(RECEIVED, "web-1", "eth0", counter_samples(T0, ramp(10_000, 1500, 13))),
        interface(SENT, "web-1", "eth0", counter_samples(T0, ramp(20_000, 500, 13))),
        interface(RECEIVED, "web-1", "eth1", counter_samples(T0, ramp(0, 100, 13))),
        interface(SENT, "web-1", "eth1", counter_samples(T0, ramp(0, 20, 13))),
        volume("shop", "data-web-1", gauge_samples(T0, [2 * GiB] * 12)),
        volume("shop", "data-web-2", gauge_samples(T0, [v * GiB for v in [1, 3, 1, 3, 3, 3, 3, 3, 4, 4, 2, 2]])),
        volume("blog", "data-blog-0", gauge_samples(T0, [GiB] * 12)),
    ]


def unusable_values_scenario() -> list[Series]:
    """One window after T1: next to usable series, a NaN, an infinite and a negative one, and one with no
    namespace."""
    return [
        container(CPU, "flaky", "broken", "app", counter_samples(T1, ramp(0, 2, 5))),
        container(CPU, "flaky", "fine", "app", counter_samples(T1, ramp(0, 1, 5))),
        Series(CPU, "counter", {"pod": "orphan", "container": "app"}, counter_samples(T1, ramp(0, 1, 5))),
        container(MEMORY, "flaky", "broken", "app", gauge_samples(T1, ["NaN"] * 4)),
        container(MEMORY, "flaky", "fine", "app", gauge_samples(T1, [100 * MiB] * 4)),
        container(MEMORY, "flaky", "infinite", "app", gauge_samples(T1, ["+Inf"] * 4)),
        volume("flaky", "data-broken", gauge_samples(T1, [-1] * 4)),
    ]


def chunked_scenario() -> list[Series]:
    """One core busy for CHUNKED_WINDOWS seconds after T2, sampled every second."""
    samples = [(unix(T2) + second, str(second)) for second in range(CHUNKED_WINDOWS + 1)]
    return [container(CPU, "batch", "job-0", "worker", samples)]


@pytest.fixture(scope="module")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    series = main_scenario() + unusable_values_scenario() + chunked_scenario()
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), series) as server:
        yield server


@pytest.fixture
async def client(prometheus_server: PrometheusServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=prometheus_server.base_url, timeout=30) as client:
        yield client


async def collect(client: httpx.AsyncClient, start: datetime, end: datetime, step: int = STEP) -> Collected:
    return await prometheus.collect(client, start=start, end=end, step_seconds=step, scope=SCOPE)


Key = tuple[str | None, str | None, datetime]  # namespace, pod, window end


def quantities(readings: list[Reading], metric: Metric) -> dict[Key, Decimal]:
    """The metric's quantities by namespace, pod and window end; each key once."""
    found = {(r.subject.namespace, r.subject.pod, r.end): r.quantity for r in readings if r.metric == metric}
    assert len(found) == sum(1 for r in readings if r.metric == metric), "two readings of one window"
    return found


def window_end(number: int) -> datetime:
    """The end of the main scenario's window `number` (1, 2 or 3)."""
    return T0 + timedelta(seconds=STEP * number)


def per_window(namespace: str, pod: str | None, values: list[Decimal]) -> dict[Key, Decimal]:
    """The quantities of the main scenario's windows 1, 2, 3, in order."""
    return {(namespace, pod, window_end(number)): value for number, value in enumerate(values, start=1)}


def decimals(*values: float) -> list[Decimal]:
    return [Decimal(str(value)) for value in values]


async def test_cpu_core_seconds_are_exact_per_pod_with_a_container_restart_inside_a_window(client) -> None:
    collected = await collect(client, T0, T0 + timedelta(seconds=3 * STEP))

    assert collected.warnings == []
    # web-1: app 7.5 + sidecar 0.75 every 15 s, 4 intervals a window; its pod cgroup's series is not added.
    # web-2: 3 every 15 s, but the restart's interval counted 2 (the new counter's value): 3 + 2 + 3 + 3.
    assert quantities(collected.readings, Metric.cpu_core_seconds) == (
        per_window("shop", "web-1", decimals(33, 33, 33)) | per_window("shop", "web-2", decimals(12, 11, 12))
        | per_window("blog", "blog-0", decimals(6, 6, 6)))


async def test_memory_is_the_window_average_times_the_step_and_the_sum_of_the_containers_peaks(client) -> None:
    collected = await collect(client, T0, T0 + timedelta(seconds=3 * STEP))

    # web-1's app averages 300, 400, 300 MiB and its sidecar 20, 20, 30 MiB over the three windows.
    assert quantities(collected.readings, Metric.memory_byte_seconds) == (
        per_window("shop", "web-1", [Decimal(mib * MiB * STEP) for mib in (320, 420, 330)])
        | per_window("blog", "blog-0", [Decimal(64 * MiB * STEP)] * 3))
    # The app peaks at 600, 400, 1000 MiB and the sidecar at 20, 30, 60 MiB: in the third window at different
    # moments, so the pod's peak (1060 MiB) is above its largest total at any one sample (1020 MiB).
    assert quantities(collected.readings, Metric.memory_peak_bytes) == (
        per_window("shop", "web-1", [Decimal(mib * MiB) for mib in (620, 430, 1060)])
        | per_window("blog", "blog-0", [Decimal(64 * MiB)] * 3))


async def test_network_bytes_received_and_sent_are_summed_over_the_pods_interfaces(client) -> None:
    collected = await collect(client, T0, T0 + timedelta(seconds=3 * STEP))

    # eth0 receives 1500 and sends 500 bytes every 15 s, eth1 100 and 20.
    received = quantities(collected.readings, Metric.network_receive_bytes)
    sent = quantities(collected.readings, Metric.network_transmit_bytes)
    assert received == per_window("shop", "web-1", decimals(6400, 6400, 6400))
    assert sent == per_window("shop", "web-1", decimals(2080, 2080, 2080))


async def test_volume_usage_is_byte_seconds_per_namespace_with_no_pod(client) -> None:
    collected = await collect(client, T0, T0 + timedelta(seconds=3 * STEP))

    # shop: data-web-1 holds 2 GiB throughout, data-web-2 averages 2, 3, 3 GiB.
    assert quantities(collected.readings, Metric.storage_byte_seconds) == (
        per_window("shop", None, [Decimal(gib * GiB * STEP) for gib in (4, 5, 5)])
        | per_window("blog", None, [Decimal(GiB * STEP)] * 3))


async def test_each_reading_names_its_window_subject_and_a_stable_source_id(client) -> None:
    collected = await collect(client, T0, T0 + timedelta(seconds=STEP))

    web_2_cpu = [r for r in collected.readings if r.metric == Metric.cpu_core_seconds and r.subject.pod == "web-2"]
    assert web_2_cpu == [Reading(
        source="prometheus", source_id=f"prometheus:{SCOPE}:cpu_core_seconds:shop:web-2:{unix(T0) + STEP}",
        subject=Subject(namespace="shop", pod="web-2"), metric=Metric.cpu_core_seconds, start=T0,
        end=T0 + timedelta(seconds=STEP), quantity=Decimal(12), scope=SCOPE)]
    shop_storage = [r for r in collected.readings if r.metric == Metric.storage_byte_seconds
                    and r.subject.namespace == "shop"]
    assert [r.source_id for r in shop_storage] == [
        f"prometheus:{SCOPE}:storage_byte_seconds:shop::{unix(T0) + STEP}"]


async def test_consecutive_collections_read_every_window_once_like_one_collection_over_their_span(client) -> None:
    first = await collect(client, T0, T0 + timedelta(seconds=STEP))
    second = await collect(client, T0 + timedelta(seconds=STEP), T0 + timedelta(seconds=3 * STEP))
    caught_up = await collect(client, T0, T0 + timedelta(seconds=3 * STEP))

    in_turn = first.readings + second.readings
    assert sorted(in_turn, key=lambda r: r.source_id) == sorted(caught_up.readings, key=lambda r: r.source_id)
    assert len({r.source_id for r in caught_up.readings}) == len(caught_up.readings)
    # One reading per window for every subject and metric: 3 pods' CPU, 2 pods' memory (average and peak),
    # 1 pod's network (received and sent), 2 namespaces' storage, each for the three 60 s windows.
    assert len(caught_up.readings) == (3 + 2 * 2 + 2 + 2) * 3
    by_window = {number: [r for r in caught_up.readings if r.end == window_end(number)] for number in (1, 2, 3)}
    assert [len(readings) for readings in by_window.values()] == [11, 11, 11]
    assert all(r.start == r.end - timedelta(seconds=STEP) for r in caught_up.readings)


async def test_nan_infinite_negative_and_namespaceless_values_are_skipped_with_a_warning(client) -> None:
    end = T1 + timedelta(seconds=STEP)
    collected = await collect(client, T1, end)

    assert {(r.metric, r.subject.label): r.quantity for r in collected.readings} == {
        (Metric.cpu_core_seconds, "flaky/broken"): Decimal(8),
        (Metric.cpu_core_seconds, "flaky/fine"): Decimal(4),
        (Metric.memory_byte_seconds, "flaky/fine"): Decimal(100 * MiB * STEP),
        (Metric.memory_peak_bytes, "flaky/fine"): Decimal(100 * MiB),
    }
    at = end.isoformat()
    assert sorted(collected.warnings) == sorted([
        "cpu_core_seconds: skipped a series without a namespace label: {'pod': 'orphan'}",
        f"memory_byte_seconds of flaky/broken at {at}: skipped 'NaN', not a finite non-negative number",
        f"memory_peak_bytes of flaky/broken at {at}: skipped 'NaN', not a finite non-negative number",
        f"memory_byte_seconds of flaky/infinite at {at}: skipped '+Inf', not a finite non-negative number",
        f"memory_peak_bytes of flaky/infinite at {at}: skipped '+Inf', not a finite non-negative number",
        f"storage_byte_seconds of flaky at {at}: skipped '-1', not a finite non-negative number",
    ])


async def test_a_span_longer_than_one_query_allows_is_read_in_chunks_one_reading_per_window(client) -> None:
    end = T2 + timedelta(seconds=CHUNKED_WINDOWS)
    with pytest.raises(SourceUnavailable, match="exceeded maximum resolution"):
        await prometheus.query_range(client, "up", start=T2 + timedelta(seconds=1), end=end, step_seconds=1)

    collected = await collect(client, T2, end, step=1)

    assert collected.warnings == []
    assert [(r.metric, r.subject.label, r.start, r.quantity) for r in collected.readings] == [
        (Metric.cpu_core_seconds, "batch/job-0", T2 + timedelta(seconds=second), Decimal(1))
        for second in range(CHUNKED_WINDOWS)]


async def test_a_malformed_query_is_source_unavailable_with_prometheus_bad_data_error(client) -> None:
    with pytest.raises(SourceUnavailable, match=r'answered 400 .*"errorType":"bad_data"'):
        await prometheus.query_range(client, "sum by (namespace", start=T0, end=T0, step_seconds=STEP)


async def test_an_address_that_is_not_the_query_api_is_source_unavailable(prometheus_server) -> None:
    async with httpx.AsyncClient(base_url=f"{prometheus_server.base_url}/not-prometheus", timeout=30) as client:
        with pytest.raises(SourceUnavailable, match="answered 404"):
            await collect(client, T0, T0 + timedelta(seconds=STEP))


async def test_a_stopped_prometheus_is_source_unavailable(tmp_path: Path) -> None:
    with running_prometheus(tmp_path, [container(CPU, "shop", "web-1", "app", counter_samples(T0, [0, 1]))]) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            before = await collect(client, T0, T0 + timedelta(seconds=15), step=15)
            assert [r.quantity for r in before.readings] == [Decimal(1)]
            server.stop()
            with pytest.raises(SourceUnavailable, match="could not be reached"):
                await collect(client, T0, T0 + timedelta(seconds=15), step=15)
