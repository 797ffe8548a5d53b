"""The OpenCost collector through the product's own cluster client and the API server's service proxy, against
the Kubernetes stand-in over HTTPS answering as OpenCost v1.112 does: exact costs per namespace per hour, what is
skipped with a warning, and each way OpenCost cannot be read."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qsl

import pytest

from jushostit.clusters.kube import ClusterUnreachable, connect
from jushostit.clusters.kubeconfig import accept_kubeconfig
from jushostit.metering.opencost import collect
from jushostit.metering.readings import Collected, Metric, Reading, SourceUnavailable, Subject
from tests.clusters import kube_stand_in
from tests.clusters.conftest import closed_port, kubeconfig_for
from tests.clusters.kube_stand_in import KubeServer, KubeStandIn, OpenCost, opencost_allocation

# The Kubernetes API stand-in's fixtures, as tests/clusters/conftest.py offers them to the tests there.
kube_server = kube_stand_in.kube_server
kube = kube_stand_in.kube

TIMEOUT = 5.0
SCOPE = "0b8f6a52-cluster"
H10, H11, H12, H13 = (datetime(2026, 11, 29, hour, tzinfo=UTC) for hour in (10, 11, 12, 13))
HOUR = timedelta(hours=1)
COSTS: dict[datetime, dict[str, float | None]] = {
    H10: {"acct-7f3a": 0.01234, "acct-9c21": 1.5, "__idle__": 0.31416, "__unallocated__": 0.00001},
    H11: {"acct-7f3a": 0.02468, "acct-9c21": 1.25, "__idle__": 0.3},
    H12: {"acct-7f3a": 2.34567, "acct-9c21": 12.0, "__idle__": 0.0, "__unallocated__": 0.10101},
}


async def collected(server: KubeServer, *, url: str | None = None) -> Collected:
    async with connect(accept_kubeconfig(kubeconfig_for(server, url=url)), timeout=TIMEOUT) as api:
        return await collect(api, start=H10, end=H13, scope=SCOPE)


async def unavailable(server: KubeServer, *, url: str | None = None) -> str:
    with pytest.raises(SourceUnavailable) as raised:
        await collected(server, url=url)
    return str(raised.value)


def reading(namespace: str, start: datetime, quantity: str) -> Reading:
    end = start + HOUR
    return Reading(source="opencost", source_id=f"opencost:{SCOPE}:{namespace}:{int(end.timestamp())}",
                   subject=Subject(namespace=namespace), metric=Metric.cost, start=start, end=end,
                   quantity=Decimal(quantity), scope=SCOPE)


async def test_each_namespace_has_its_exact_cost_for_each_hour(kube: KubeStandIn, kube_server: KubeServer) -> None:
    kube.opencost = OpenCost(costs=COSTS)

    result = await collected(kube_server)

    assert result.warnings == []
    assert sorted(result.readings, key=lambda r: (r.start, r.subject.label)) == [
        reading("__idle__", H10, "0.31416"), reading("__unallocated__", H10, "0.00001"),
        reading("acct-7f3a", H10, "0.01234"), reading("acct-9c21", H10, "1.5"),
        reading("__idle__", H11, "0.3"), reading("acct-7f3a", H11, "0.02468"), reading("acct-9c21", H11, "1.25"),
        reading("__idle__", H12, "0"), reading("__unallocated__", H12, "0.10101"),
        reading("acct-7f3a", H12, "2.34567"), reading("acct-9c21", H12, "12"),
    ]
    assert all(type(r.quantity) is Decimal and r.quantity.as_tuple().exponent >= -5 for r in result.readings)
    assert sum(r.quantity for r in result.readings if r.subject.namespace == "acct-7f3a") == Decimal("2.38269")


async def test_the_query_is_the_documented_one_through_the_service_proxy(
    kube: KubeStandIn, kube_server: KubeServer
) -> None:
    kube.opencost = OpenCost(costs=COSTS)

    await collected(kube_server)

    assert kube.opencost.requests == [
        "window=2026-11-29T10%3A00%3A00Z%2C2026-11-29T13%3A00%3A00Z&aggregate=namespace&accumulate=false&step=1h"
    ]
    assert parse_qsl(kube.opencost.requests[0]) == [
        ("window", "2026-11-29T10:00:00Z,2026-11-29T13:00:00Z"), ("aggregate", "namespace"),
        ("accumulate", "false"), ("step", "1h"),
    ]


async def test_null_nan_and_negative_costs_are_skipped_with_a_warning(
    kube: KubeStandIn, kube_server: KubeServer
) -> None:
    kube.opencost = OpenCost(costs={
        H10: {"acct-7f3a": float("nan"), "acct-9c21": 0.5},  # OpenCost writes NaN as null
        H11: {"acct-7f3a": None, "acct-9c21": -0.25},
        H12: {"acct-7f3a": 0.125},
    })

    result = await collected(kube_server)

    assert {(r.subject.namespace, r.start, r.quantity) for r in result.readings} == {
        ("acct-9c21", H10, Decimal("0.5")), ("acct-7f3a", H12, Decimal("0.125")),
    }
    assert result.warnings == [
        "acct-7f3a: skipped totalCost null for 2026-11-29T10:00:00Z to 2026-11-29T11:00:00Z",
        "acct-7f3a: skipped totalCost null for 2026-11-29T11:00:00Z to 2026-11-29T12:00:00Z",
        "acct-9c21: skipped totalCost -0.25 for 2026-11-29T11:00:00Z to 2026-11-29T12:00:00Z",
    ]


async def test_a_nan_or_infinity_literal_is_skipped_too(kube: KubeStandIn, kube_server: KubeServer) -> None:
    allocations = {name: opencost_allocation(name, H10, H11, 1.0) for name in ("a", "b", "c")}
    body = json.dumps({"code": 200, "status": "success", "data": [allocations]})
    for literal in ("NaN", "Infinity"):  # not what OpenCost writes, but what a JSON number can be read as
        body = body.replace('"totalCost": 1.0', f'"totalCost": {literal}', 1)
    kube.opencost = OpenCost(body=body)

    result = await collected(kube_server)

    assert [r.subject.namespace for r in result.readings] == ["c"]
    assert result.warnings[:2] == ["a: skipped totalCost NaN for 2026-11-29T10:00:00Z to 2026-11-29T11:00:00Z",
                                   "b: skipped totalCost Infinity for 2026-11-29T10:00:00Z to 2026-11-29T11:00:00Z"]


async def test_windows_that_are_not_the_requested_hours_are_skipped_with_a_warning(
    kube: KubeStandIn, kube_server: KubeServer
) -> None:
    kube.opencost = OpenCost(costs=COSTS, ignores_step=True)  # one set for the three hours

    result = await collected(kube_server)

    assert result.readings == []
    assert "acct-7f3a: skipped a window that is not one of the requested hours (2026-11-29T10:00:00Z to " \
        "2026-11-29T13:00:00Z)" in result.warnings
    assert result.warnings[-3:] == [f"OpenCost had no allocation for {hour} to {end}" for hour, end in (
        ("2026-11-29T10:00:00Z", "2026-11-29T11:00:00Z"), ("2026-11-29T11:00:00Z", "2026-11-29T12:00:00Z"),
        ("2026-11-29T12:00:00Z", "2026-11-29T13:00:00Z"))]


async def test_an_hour_opencost_has_nothing_for_is_a_warning(kube: KubeStandIn, kube_server: KubeServer) -> None:
    kube.opencost = OpenCost(costs={H10: COSTS[H10], H12: COSTS[H12]})

    result = await collected(kube_server)

    assert {r.start for r in result.readings} == {H10, H12}
    assert result.warnings == ["OpenCost had no allocation for 2026-11-29T11:00:00Z to 2026-11-29T12:00:00Z"]


@pytest.mark.parametrize(("setup", "expected"), [
    (lambda kube: setattr(kube, "opencost", OpenCost(costs=COSTS, rejects_window=True)),
     "answered 400: Invalid 'window' parameter: illegal window: 2026-11-29T10:00:00Z,2026-11-29T13:00:00Z"),
    (lambda kube: setattr(kube, "opencost", OpenCost(costs=COSTS, ready=False)),
     'answered 503: {"kind":"Status"'),
    (lambda kube: setattr(kube, "opencost", None), 'answered 404: {"kind":"Status"'),
    (lambda kube: setattr(kube, "opencost", OpenCost(service="cost-model")), 'services \\"opencost\\" not found'),
    (lambda kube: (setattr(kube, "opencost", OpenCost(costs=COSTS)), kube.denied.add("get services/proxy")),
     "forbids what we asked of it (403)"),
], ids=["400 bad window", "503 no endpoints", "404 not installed", "404 other service", "403 denied"])
async def test_opencost_or_the_proxy_refusing_is_source_unavailable_with_the_status(
    kube: KubeStandIn, kube_server: KubeServer, setup, expected: str
) -> None:
    setup(kube)

    message = await unavailable(kube_server)

    assert message.startswith(f"OpenCost (http:opencost:9003 in namespace opencost) on cluster {SCOPE} could not "
                              "be read for 2026-11-29T10:00:00Z,2026-11-29T13:00:00Z: ")
    assert expected in message
    if "503" in expected:
        assert 'no endpoints available for service \\"http:opencost:9003\\"' in message


async def test_a_cluster_nobody_answers_for_is_source_unavailable(kube_server: KubeServer) -> None:
    message = await unavailable(kube_server, url=f"https://127.0.0.1:{closed_port()}")
    assert "cannot be reached" in message


def _set(*names: str, start: datetime = H10, total: object = 1.0) -> dict[str, object]:
    return {name: {**opencost_allocation(name, start, start + HOUR, 1.0), "totalCost": total} for name in names}


@pytest.mark.parametrize(("body", "expected"), [
    ("<html><body>502 Bad Gateway</body></html>", "not JSON"),
    (json.dumps({"code": 500, "status": "", "message": "Error: failed to query Prometheus"}),
     "answered code 500: Error: failed to query Prometheus"),
    (json.dumps({"code": 200, "status": "success", "data": {"acct-7f3a": {}}}), "not a list of allocation sets"),
    (json.dumps([]), "not OpenCost's envelope"),
    (json.dumps({"code": 200, "data": [_set("acct-7f3a"), _set("acct-9c21", start=H11, total="0.5")]}),
     "totalCost is no number"),
    (json.dumps({"code": 200, "data": [_set("acct-7f3a"), {"acct-9c21": {"name": "acct-9c21", "totalCost": 1}}]}),
     "without a readable window"),
    (json.dumps({"code": 200, "data": [_set("acct-7f3a"), _set("acct-7f3a")]}), "twice"),
], ids=["html", "code 500", "data not a list", "not an envelope", "string cost", "no window", "duplicate"])
async def test_a_body_that_is_not_the_documented_json_is_source_unavailable_and_nothing_is_kept(
    kube: KubeStandIn, kube_server: KubeServer, body: str, expected: str
) -> None:
    kube.opencost = OpenCost(body=body)

    assert expected in await unavailable(kube_server)


async def test_proxy_get_returns_the_body_and_says_what_a_refusal_was(
    kube: KubeStandIn, kube_server: KubeServer
) -> None:
    kube.opencost = OpenCost(costs=COSTS)
    async with connect(accept_kubeconfig(kubeconfig_for(kube_server)), timeout=TIMEOUT) as api:
        body = await api.proxy_get(namespace="opencost", service="http:opencost:9003", path="allocation/compute",
                                   params={"window": "1795946400,1795950000", "step": "1h"})
        with pytest.raises(ClusterUnreachable) as raised:
            await api.proxy_get(namespace="opencost", service="http:opencost:9003", path="allocation/compute",
                                params={"window": "yesterday-ish"})

    assert [set(step) for step in json.loads(body)["data"]] == [set(COSTS[H10])]
    error = raised.value
    assert (error.status_code, error.code) == (502, "cluster_bad_answer")
    assert error.details == {"status": 400, "body": "Invalid 'window' parameter: illegal window: yesterday-ish"}
    assert "answered 400: Invalid 'window' parameter" in error.message
