"""Cost readings from OpenCost (its allocation API, v1.112), read through the Kubernetes API server's service proxy
so OpenCost is never exposed outside its cluster: `GET /allocation/compute` on its service, aggregated by namespace,
one allocation set per hour. RBAC: `get services/proxy` in OpenCost's namespace.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from jushostit.kit.errors import AppError
from jushostit.metering.readings import Collected, Metric, Reading, SourceUnavailable, Subject

SOURCE = "opencost"
PATH = "allocation/compute"
HOUR = timedelta(hours=1)


class ServiceProxy(Protocol):
    """What this collector needs of a cluster's API (`jushostit.clusters.kube.ClusterApi` has it)."""

    async def proxy_get(self, *, namespace: str, service: str, path: str, params: dict[str, str]) -> bytes: ...


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hours(start: datetime, end: datetime) -> list[datetime]:
    """The hour windows' starts; start and end must be aware, UTC hours, end after start."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start or any(moment.minute or moment.second or moment.microsecond for moment in (start, end)):
        raise ValueError(f"not a whole number of UTC hours: {start.isoformat()} to {end.isoformat()}")
    return [start + HOUR * index for index in range(int((end - start) / HOUR))]


def _constant(name: str) -> Decimal:
    return Decimal(name)  # NaN, Infinity, -Infinity: not finite, so skipped


def _sets(body: bytes, described: str) -> list[dict[str, Any]]:
    """The envelope's allocation sets, or SourceUnavailable. Numbers are read as Decimal from the JSON's own text."""
    try:
        envelope = json.loads(body, parse_float=Decimal, parse_constant=_constant)
    except ValueError:
        raise SourceUnavailable(f"{described} answered something that is not JSON: {body[:200]!r}") from None
    if not isinstance(envelope, dict):
        raise SourceUnavailable(f"{described} answered JSON that is not OpenCost's envelope")
    if envelope.get("code") != 200:
        message = envelope.get("message")
        raise SourceUnavailable(f"{described} answered code {envelope.get('code')!r}"
                                + (f": {message[:200]}" if isinstance(message, str) and message else ""))
    data = envelope.get("data")
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise SourceUnavailable(f"{described} answered an envelope whose data is not a list of allocation sets")
    return data


def _window(allocation: Any, key: str, described: str) -> tuple[datetime, datetime]:
    try:
        window = allocation["window"]
        bounds = datetime.fromisoformat(window["start"]), datetime.fromisoformat(window["end"])
    except (KeyError, TypeError, ValueError):
        raise SourceUnavailable(f"{described} answered an allocation {key!r} without a readable window") from None
    if any(bound.tzinfo is None for bound in bounds):
        raise SourceUnavailable(f"{described} answered an allocation {key!r} whose window has no time zone")
    return bounds[0].astimezone(UTC), bounds[1].astimezone(UTC)


async def collect(api: ServiceProxy, *, start: datetime, end: datetime, scope: str, namespace: str = "opencost",
                  service: str = "http:opencost:9003") -> Collected:
    """One `Metric.cost` reading per namespace per hour from `start` to `end` (UTC, whole hours): OpenCost's
    `totalCost` of the namespace in that hour, in the major units of the currency OpenCost is configured with.

    OpenCost's own `__idle__` (capacity no workload was allocated) and `__unallocated__` (costs of no namespace)
    are kept as readings of namespaces of those names: no account has such a namespace, so the metering service
    lists them as unmapped subjects and never bills them.

    Skipped, each with a warning: a null (OpenCost's NaN), infinite or negative totalCost, and an allocation
    whose window is not one of the requested hours. Anything else amiss (the cluster or the proxy refusing or
    failing, OpenCost's own error, a body that is not its documented JSON) raises SourceUnavailable: nothing of
    the window is returned.
    """
    hours = set(_hours(start, end))
    window = f"{_rfc3339(start)},{_rfc3339(end)}"
    described = f"OpenCost ({service} in namespace {namespace}) on cluster {scope}"
    params = {"window": window, "aggregate": "namespace", "accumulate": "false", "step": "1h"}
    try:
        body = await api.proxy_get(namespace=namespace, service=service, path=PATH, params=params)
    except AppError as error:
        raise SourceUnavailable(f"{described} could not be read for {window}: {error.message}") from error

    readings: list[Reading] = []
    warnings: list[str] = []
    seen: set[tuple[str, datetime]] = set()
    answered: set[datetime] = set()
    for allocation_set in _sets(body, described):
        for key, allocation in allocation_set.items():
            if not isinstance(allocation, dict):
                raise SourceUnavailable(f"{described} answered an allocation {key!r} that is not an object")
            properties = allocation.get("properties")
            named = properties.get("namespace") if isinstance(properties, dict) else None
            subject_namespace = named if isinstance(named, str) and named else key
            window_start, window_end = _window(allocation, key, described)
            if window_start not in hours or window_end - window_start != HOUR:
                warnings.append(f"{subject_namespace}: skipped a window that is not one of the requested hours "
                                f"({_rfc3339(window_start)} to {_rfc3339(window_end)})")
                continue
            answered.add(window_start)
            if "totalCost" not in allocation:
                raise SourceUnavailable(f"{described} answered an allocation {key!r} without totalCost")
            total = allocation["totalCost"]
            if isinstance(total, bool) or not isinstance(total, int | Decimal | None):
                raise SourceUnavailable(f"{described} answered an allocation {key!r} whose totalCost is no number")
            hour = f"{_rfc3339(window_start)} to {_rfc3339(window_end)}"
            quantity = None if total is None else Decimal(str(total))
            if quantity is None or not quantity.is_finite() or quantity < 0:
                shown = "null" if total is None else total
                warnings.append(f"{subject_namespace}: skipped totalCost {shown} for {hour}")
                continue
            if (subject_namespace, window_start) in seen:
                raise SourceUnavailable(f"{described} answered namespace {subject_namespace!r} twice for {hour}")
            seen.add((subject_namespace, window_start))
            readings.append(Reading(
                source=SOURCE,
                source_id=f"{SOURCE}:{scope}:{subject_namespace}:{int(window_end.timestamp())}",
                subject=Subject(namespace=subject_namespace),
                metric=Metric.cost,
                start=window_start,
                end=window_end,
                quantity=quantity,
                scope=scope,
            ))
    warnings.extend(f"OpenCost had no allocation for {_rfc3339(missing)} to {_rfc3339(missing + HOUR)}"
                    for missing in sorted(hours - answered))
    return Collected(readings=readings, warnings=warnings)
