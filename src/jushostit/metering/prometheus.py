"""Usage per namespace and pod from a cluster's Prometheus: cAdvisor's CPU, memory and network series and the
kubelet's volume usage.

Each reading covers one step window (t - step, t], read by a range query evaluated at every window end t whose
range selector is one step long, so a span is read window by window with no gap or overlap and a run that
missed windows catches up in one call. Prometheus writes values as strings; they become Decimal as written.
A window that cannot be read raises SourceUnavailable instead of yielding zeros, so the next run reads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from jushostit.metering.readings import Collected, Metric, Reading, SourceUnavailable, Subject

SOURCE = "prometheus"
# Prometheus refuses a range query of more than 11,000 points per series; longer spans are read in chunks.
MAX_POINTS_PER_QUERY = 10_000
# cAdvisor's series of a pod's own cgroup have container="" and hold the sum of its containers: counting them
# too would count every container twice.
_CONTAINERS = '{container!=""}'
# Metrics whose query gives the window's average level; the quantity is that level times the window's length.
_INTEGRATED = frozenset({Metric.memory_byte_seconds, Metric.storage_byte_seconds})


def promql_by_metric(step_seconds: int) -> dict[Metric, str]:
    """The query of each metric for windows of `step_seconds`. Prometheus 2 also counts a sample lying exactly
    on a window's start in a gauge's average and peak (Prometheus 3 does not); scrapes rarely land there."""
    window = f"[{step_seconds}s]"
    per_pod = "sum by (namespace, pod)"
    cpu = f"container_cpu_usage_seconds_total{_CONTAINERS}"
    memory = f"container_memory_working_set_bytes{_CONTAINERS}"
    return {
        Metric.cpu_core_seconds: f"{per_pod} (increase({cpu}{window}))",
        Metric.memory_byte_seconds: f"{per_pod} (avg_over_time({memory}{window}))",
        Metric.memory_peak_bytes: f"{per_pod} (max_over_time({memory}{window}))",
        # Network counters exist per pod (its network namespace), not per container.
        Metric.network_receive_bytes: f"{per_pod} (increase(container_network_receive_bytes_total{window}))",
        Metric.network_transmit_bytes: f"{per_pod} (increase(container_network_transmit_bytes_total{window}))",
        Metric.storage_byte_seconds: f"sum by (namespace) (avg_over_time(kubelet_volume_stats_used_bytes{window}))",
    }


@dataclass(frozen=True)
class Series:
    """One series of a range query's answer: its labels and its (evaluation time, value as written) points."""

    labels: dict[str, str]
    points: list[tuple[datetime, object]]


@dataclass(frozen=True)
class RangeAnswer:
    series: list[Series]
    warnings: list[str]  # what Prometheus itself warned about (a partial answer, say)


async def collect(client: httpx.AsyncClient, *, start: datetime, end: datetime, step_seconds: int,
                  scope: str) -> Collected:
    """Every metric's readings per step window over (start, end]. `client`'s base_url is the Prometheus server;
    start and end are aligned to the step. Raises SourceUnavailable when any query fails: nothing partial."""
    step = timedelta(seconds=step_seconds)
    if step_seconds <= 0 or end <= start or (end - start) % step:
        raise ValueError(f"({start}, {end}] is not a whole number of {step_seconds} s windows")
    readings: list[Reading] = []
    warnings: list[str] = []
    for metric, promql in promql_by_metric(step_seconds).items():
        for first_end, last_end in window_end_chunks(start, end, step):
            answer = await query_range(client, promql, start=first_end, end=last_end, step_seconds=step_seconds)
            warnings.extend(f"Prometheus warned about {metric}: {warning}" for warning in answer.warnings)
            for series in answer.series:
                usable, skipped = readings_of_series(metric, series, step_seconds, scope)
                readings.extend(usable)
                warnings.extend(skipped)
    return Collected(readings=readings, warnings=warnings)


def window_end_chunks(start: datetime, end: datetime, step: timedelta) -> Iterator[tuple[datetime, datetime]]:
    """The first and last window end of each query: the window ends start + step … end, in runs of at most
    MAX_POINTS_PER_QUERY."""
    windows = (end - start) // step
    for first in range(1, windows + 1, MAX_POINTS_PER_QUERY):
        last = min(first + MAX_POINTS_PER_QUERY - 1, windows)
        yield start + first * step, start + last * step


def readings_of_series(metric: Metric, series: Series, step_seconds: int,
                       scope: str) -> tuple[list[Reading], list[str]]:
    """The series' usable points as readings, and a warning for each point (or the series) skipped."""
    namespace, pod = series.labels.get("namespace"), series.labels.get("pod")
    if namespace is None:
        return [], [f"{metric}: skipped a series without a namespace label: {series.labels}"]
    subject = Subject(namespace=namespace, pod=pod)
    readings: list[Reading] = []
    warnings: list[str] = []
    for window_end, value in series.points:
        quantity = parse_quantity(value)
        if quantity is None:
            warnings.append(f"{metric} of {subject.label} at {window_end.isoformat()}: skipped {value!r}, "
                            "not a finite non-negative number")
            continue
        readings.append(Reading(
            source=SOURCE,
            source_id=f"{SOURCE}:{scope}:{metric}:{namespace}:{pod or ''}:{int(window_end.timestamp())}",
            subject=subject, metric=metric, start=window_end - timedelta(seconds=step_seconds), end=window_end,
            quantity=quantity * step_seconds if metric in _INTEGRATED else quantity, scope=scope))
    return readings, warnings


def parse_quantity(value: object) -> Decimal | None:
    """The value as a usage quantity, or None when it is none: not a number, infinite, or negative."""
    if not isinstance(value, str):
        return None
    try:
        quantity = Decimal(value)
    except InvalidOperation:
        return None
    return quantity if quantity.is_finite() and quantity >= 0 else None


async def query_range(client: httpx.AsyncClient, promql: str, *, start: datetime, end: datetime,
                      step_seconds: int) -> RangeAnswer:
    """One range query evaluated at start, start + step, … end. Raises SourceUnavailable unless Prometheus
    answers it with the documented matrix."""
    params = {"query": promql, "start": str(int(start.timestamp())), "end": str(int(end.timestamp())),
              "step": str(step_seconds)}
    try:
        response = await client.get("/api/v1/query_range", params=params)
    except httpx.HTTPError as error:
        raise SourceUnavailable(f"Prometheus at {client.base_url} could not be reached: {error!r}") from error
    try:
        body = response.json()
    except ValueError:
        body = None
    if not response.is_success or not isinstance(body, dict) or body.get("status") != "success":
        raise SourceUnavailable(f"Prometheus answered {response.status_code} to {promql!r}: {response.text[:500]}")
    try:
        return parse_matrix(body)
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        raise SourceUnavailable(f"Prometheus's answer to {promql!r} is not a matrix: {error!r}") from error


def parse_matrix(body: dict[str, Any]) -> RangeAnswer:
    """A successful query_range body as series. Raises KeyError, TypeError, ValueError or OverflowError when it
    is not the documented {"data": {"resultType": "matrix", "result": [{"metric": {…}, "values": [[time,
    "value"], …]}]}}."""
    data = body["data"]
    if data["resultType"] != "matrix":
        raise ValueError(f"resultType {data['resultType']!r}")
    series = []
    for result in data["result"]:
        labels = result["metric"]
        if not isinstance(labels, dict):
            raise TypeError(f"labels {labels!r}")
        points = [(datetime.fromtimestamp(float(time), tz=UTC), value) for time, value in result["values"]]
        series.append(Series(labels={str(key): str(label) for key, label in labels.items()}, points=points))
    warnings = body.get("warnings") or []
    if not isinstance(warnings, list):
        raise TypeError(f"warnings {warnings!r}")
    return RangeAnswer(series=series, warnings=[str(warning) for warning in warnings])
