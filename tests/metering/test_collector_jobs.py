"""The collector jobs end to end on committed data: `run_collector` over a registered cluster's real Prometheus
(Debian's package, synthetic cAdvisor and kubelet series written with promtool) and its OpenCost behind the
Kubernetes API stand-in, then the aggregation, the admin routes that show what the collectors did, the top
spenders, and the purge of raw samples.

Windows are exact: each test seeds the previous successful run ending at T0 (today, 00:00 UTC) or lets a first
run read one step, and travels the clock to just after the last window it means to read. Every expected quantity
is worked out by hand from the synthetic samples (counters every 15 s on the window boundaries, so `increase`
needs no extrapolation; gauges 5 s past each 15 s, twenty in each 300 s window).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlalchemy import delete, func, select, text

from jushostit.clusters import service as clusters_service
from jushostit.clusters.schemas import ClusterCreate
from jushostit.kit.db import utcnow
from jushostit.metering import service
from jushostit.metering.readings import Collected, Metric, Reading, Subject
from jushostit.metering.tasks import (
    aggregate_and_check,
    collect_opencost_once,
    collect_prometheus_once,
    purge,
)
from jushostit.models import AccountPlacement, Cluster, Instance, MeteringRun, UsageDaily, UsageSample
from tests.clusters import kube_stand_in
from tests.clusters.conftest import kubeconfig_for
from tests.clusters.kube_stand_in import KubeServer, KubeStandIn, OpenCost
from tests.live import Live, Signup
from tests.metering.prometheus_server import PrometheusServer, Series
from tests.metering.test_local_usage import charge, metered_plan

# The Kubernetes API stand-in's fixtures, as tests/metering/test_opencost.py takes them.
kube_server = kube_stand_in.kube_server
kube = kube_stand_in.kube

STEP = 300  # JUSHOSTIT_METERING_INTERVAL_SECONDS
TICK = 15  # the scrape interval of the synthetic series
TICKS = STEP // TICK  # samples of a series in one window
WINDOWS = 3
MiB = 1 << 20
GiB = 1 << 30
T0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)  # where the synthetic data starts
JUST_AFTER = timedelta(seconds=10)  # the clock, past the end of the last window a run is to read
HOUR = timedelta(hours=1)

CPU = "container_cpu_usage_seconds_total"
MEMORY = "container_memory_working_set_bytes"
RECEIVED = "container_network_receive_bytes_total"
SENT = "container_network_transmit_bytes_total"
VOLUME = "kubelet_volume_stats_used_bytes"


def window_end(number: int) -> datetime:
    return T0 + timedelta(seconds=STEP * number)


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


def counter(per_tick: list[float], first: float = 100.0) -> list[tuple[int, str]]:
    """A counter sampled every 15 s from T0 on the window boundaries, growing by per_tick[w] each tick of window
    w: it counts per_tick[w] * 20 in that window (increments exact in binary, so the sums are exact)."""
    samples = [(unix(T0), str(first))]
    value = first
    for window, increment in enumerate(per_tick):
        for tick in range(1, TICKS + 1):
            value += increment
            samples.append((unix(T0) + window * STEP + tick * TICK, str(value)))
    return samples


def gauge(levels: list[float]) -> list[tuple[int, str]]:
    """A gauge at levels[w] throughout window w, sampled 5 s past every 15 s (off the boundaries)."""
    return [(unix(T0) + window * STEP + 5 + tick * TICK, str(level))
            for window, level in enumerate(levels) for tick in range(TICKS)]


def in_pod(name: str, namespace: str, pod: str, container: str, samples: list[tuple[int, str]]) -> Series:
    kind = "counter" if name.endswith("_total") else "gauge"
    return Series(name, kind, {"namespace": namespace, "pod": pod, "container": container}, samples)


def on_interface(name: str, namespace: str, pod: str, samples: list[tuple[int, str]]) -> Series:
    return Series(name, "counter", {"namespace": namespace, "pod": pod, "interface": "eth0", "container": ""}, samples)


# --- fixtures and arrangements ---------------------------------------------------------------------------------


@pytest.fixture
async def cluster(live: Live, kube: KubeStandIn, kube_server: KubeServer) -> AsyncIterator[Cluster]:
    """A cluster registered against the stand-in (its kubeconfig encrypted, as the admin route stores it), and
    afterwards its runs, samples, placements and queued observation gone with it."""
    data = ClusterCreate(name=f"metered-{uuid.uuid4().hex[:6]}", kubeconfig=kubeconfig_for(kube_server),
                         base_domain="apps.example.com")
    async with live.container.database.unit_of_work() as session:
        registered = await clusters_service.register(session, live.container.secret_box, data=data, timeout=5)
    yield registered
    scope = str(registered.id)
    async with live.container.database.unit_of_work() as session:
        await session.execute(delete(UsageSample).where(UsageSample.scope == scope))
        await session.execute(delete(MeteringRun).where(MeteringRun.scope == scope))
        await session.execute(delete(AccountPlacement).where(AccountPlacement.cluster_id == registered.id))
        await session.execute(text("DELETE FROM procrastinate_jobs WHERE status = 'todo' "
                                   "AND args->>'cluster_id' = :id"), {"id": scope})
        await clusters_service.delete(session, cluster_id=registered.id)


@pytest.fixture
async def scopes(live: Live) -> AsyncIterator[list[str]]:
    """Scopes of runs a test recorded outside a cluster: the runs are no account's rows, so they are removed
    after it (the samples go with the accounts)."""
    recorded: list[str] = []
    yield recorded
    async with live.container.database.unit_of_work() as session:
        await session.execute(delete(MeteringRun).where(MeteringRun.scope.in_(recorded)))


class Tenant:
    def __init__(self, who: Signup, instance_id: uuid.UUID, slug: str) -> None:
        self.who = who
        self.account_id = uuid.UUID(who.account_id)
        self.instance_id = instance_id
        self.slug = slug
        self.namespace = f"jushostit-{self.account_id}"
        self.pod = f"{slug}-7d9f8b6c5-x2x4z"  # a Deployment's pod of the instance


async def tenant(live: Live, cluster: Cluster) -> Tenant:
    """An account placed on the cluster with one instance (a committed row, as the reconciler left it)."""
    who = await live.signup("Metered Tenant")
    instance_id = uuid.uuid4()
    slug = f"shop-{instance_id.hex[:6]}"
    async with live.container.database.unit_of_work() as session:
        session.add(AccountPlacement(account_id=uuid.UUID(who.account_id), cluster_id=cluster.id))
        session.add(Instance(id=instance_id, account_id=uuid.UUID(who.account_id), name="shop", slug=slug,
                             template_code="static-site", tier="small", observed_status="running"))
    return Tenant(who, instance_id, slug)


async def seed_run(live: Live, collector: str, scope: str, end: datetime, step: timedelta) -> None:
    """A successful run whose window ended at `end`: the next run reads from there."""
    async with live.container.database.unit_of_work() as session:
        session.add(MeteringRun(collector=collector, scope=scope, window_start=end - step, window_end=end,
                                status="succeeded", started_at=end, finished_at=end, rows=0, unmapped=0, errors=[]))


async def runs_of(live: Live, admin: Signup, collector: str, scope: str) -> list[dict[str, Any]]:
    response = await live.client.get("/v1/admin/metering/runs", params={"collector": collector, "limit": 200},
                                     headers=admin.headers)
    assert response.status_code == 200, response.text
    return [run for run in response.json()["items"] if run["scope"] == scope]


async def health_of(live: Live, admin: Signup, collector: str, scope: str) -> dict[str, Any]:
    response = await live.client.get("/v1/admin/metering/collectors", headers=admin.headers)
    assert response.status_code == 200, response.text
    [health] = [item for item in response.json()["items"] if (item["collector"], item["scope"]) == (collector, scope)]
    return health


async def samples_of(live: Live, scope: str | None = None, *, account_id: uuid.UUID | None = None
                     ) -> list[UsageSample]:
    """The samples of a cluster (or of an account), by window and subject."""
    query = select(UsageSample).where(UsageSample.scope == scope) if account_id is None else \
        select(UsageSample).where(UsageSample.account_id == account_id)
    async with live.container.database.reader() as session:
        found = (await session.scalars(query)).all()
    return sorted(found, key=lambda s: (s.window_start, s.subject, s.metric))


async def daily_of(live: Live, account_id: uuid.UUID) -> dict[date, UsageDaily]:
    async with live.container.database.reader() as session:
        rows = (await session.scalars(select(UsageDaily).where(UsageDaily.account_id == account_id))).all()
    return {row.day: row for row in rows}


def decimals(quantities: dict[str, str]) -> dict[str, Decimal]:
    return {metric: Decimal(value) for metric, value in quantities.items()}


def at(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


# --- Prometheus -------------------------------------------------------------------------------------------------


def tenant_series(who: Tenant, orphan: str) -> list[Series]:
    """Three windows after T0: the instance's pod (two containers), another pod of the account that is no
    instance's, the account's volume, and a namespace nobody owns."""
    return [
        in_pod(CPU, who.namespace, who.pod, "app", counter([1.5] * WINDOWS)),  # 30 core-seconds a window
        in_pod(CPU, who.namespace, who.pod, "sidecar", counter([0.25] * WINDOWS)),  # 5
        in_pod(CPU, who.namespace, "cron-5f6d8-abcde", "job", counter([0.5] * WINDOWS)),  # 10
        in_pod(CPU, orphan, "stray-0", "app", counter([1.0] * WINDOWS)),  # 20, never billed
        in_pod(MEMORY, who.namespace, who.pod, "app", gauge([100 * MiB, 200 * MiB, 300 * MiB])),
        in_pod(MEMORY, who.namespace, who.pod, "sidecar", gauge([20 * MiB] * WINDOWS)),
        on_interface(RECEIVED, who.namespace, who.pod, counter([50.0] * WINDOWS, first=0)),  # 1000 bytes a window
        on_interface(SENT, who.namespace, who.pod, counter([20.0] * WINDOWS, first=0)),  # 400
        Series(VOLUME, "gauge", {"namespace": who.namespace, "persistentvolumeclaim": "data"}, gauge([GiB] * WINDOWS)),
    ]


async def test_a_prometheus_run_stores_each_window_maps_it_to_the_account_and_its_instance_and_lists_the_rest(
    live: Live, cluster: Cluster, tmp_path: Path,
) -> None:
    admin = await live.admin()
    owner = await tenant(live, cluster)
    orphan = f"orphan-{uuid.uuid4().hex[:6]}"
    scope = str(cluster.id)
    server = PrometheusServer(tmp_path, tenant_series(owner, orphan))
    server.start()
    try:
        live.configure(prometheus_url={cluster.name: server.base_url}, metering_interval_seconds=STEP,
                       prometheus_lag_seconds=0)
        await seed_run(live, "prometheus", scope, T0, timedelta(seconds=STEP))
        with time_machine.travel(window_end(WINDOWS) + JUST_AFTER, tick=True):
            assert await collect_prometheus_once() == 1
            assert await collect_prometheus_once() == 0  # nothing new until the next window has ended
            assert await aggregate_and_check() >= {owner.account_id}
    finally:
        server.stop()

    # The run: the three windows since the seeded one, 8 readings each, the orphan's 3 unmapped.
    [run, seeded] = await runs_of(live, admin, "prometheus", scope)
    assert (run["status"], at(run["window_start"]), at(run["window_end"])) == ("succeeded", T0, window_end(WINDOWS))
    assert (run["rows"], run["unmapped"], run["errors"]) == (24, 3, [])
    assert at(seeded["window_end"]) == T0

    samples = await samples_of(live, scope)
    assert len(samples) == 24 and all(s.aggregated_at is not None for s in samples)
    assert {(s.window_start, s.window_end) for s in samples} == {
        (window_end(n - 1), window_end(n)) for n in range(1, WINDOWS + 1)}
    assert {s.subject: (s.account_id, s.instance_id) for s in samples} == {
        f"{owner.namespace}/{owner.pod}": (owner.account_id, owner.instance_id),
        f"{owner.namespace}/cron-5f6d8-abcde": (owner.account_id, None),  # the account's, no instance's
        owner.namespace: (owner.account_id, None),  # its volume
        f"{orphan}/stray-0": (None, None),
    }

    # The day: the instance's pod 35 core-seconds a window (30 + 5), the other pod 10; memory averages of
    # 120, 220, 320 MiB (app + sidecar) over 300 s, its peak the largest of them; 1 GiB of volume throughout.
    [day] = (await daily_of(live, owner.account_id)).values()
    assert day.day == T0.date() and day.sources == ["prometheus"]
    instance = {
        "cpu_core_seconds": Decimal(105), "memory_byte_seconds": Decimal((120 + 220 + 320) * MiB * STEP),
        "memory_peak_bytes": Decimal(320 * MiB), "network_receive_bytes": Decimal(3000),
        "network_transmit_bytes": Decimal(1200),
    }
    own = {"cpu_core_seconds": Decimal(30), "storage_byte_seconds": Decimal(WINDOWS * GiB * STEP)}
    assert {key: decimals(metrics) for key, metrics in day.breakdown.items()} == {
        str(owner.instance_id): instance, "": own}
    assert decimals(day.quantities) == {**instance, **own, "cpu_core_seconds": Decimal(135)}

    unmapped = await live.client.get("/v1/admin/metering/unmapped", headers=admin.headers)
    assert unmapped.status_code == 200, unmapped.text
    listed = [item for item in unmapped.json()["items"] if item["scope"] == scope]
    assert [(i["source"], i["subject"], i["samples"], at(i["first_seen"]), at(i["last_seen"])) for i in listed] == [
        ("prometheus", f"{orphan}/stray-0", WINDOWS, T0, window_end(WINDOWS))]

    health = await health_of(live, admin, "prometheus", scope)
    assert at(health["read_until"]) == window_end(WINDOWS)
    assert (health["last_run"]["id"], health["last_run"]["status"]) == (run["id"], "succeeded")

    refused = await live.client.get("/v1/admin/metering/unmapped", headers=owner.who.headers)
    assert refused.status_code == 403


async def test_an_outage_is_recorded_failed_and_the_next_run_catches_up_so_nothing_is_zero_or_lost(
    live: Live, cluster: Cluster, tmp_path: Path,
) -> None:
    admin = await live.admin()
    owner = await tenant(live, cluster)
    scope = str(cluster.id)
    # 30, 45 and 60 core-seconds in the three windows: each window's reading is told apart from the others.
    server = PrometheusServer(tmp_path, [in_pod(CPU, owner.namespace, owner.pod, "app", counter([1.5, 2.25, 3.0]))])
    server.start()
    try:
        live.configure(prometheus_url={cluster.name: server.base_url}, metering_interval_seconds=STEP,
                       prometheus_lag_seconds=0)
        with time_machine.travel(window_end(1) + JUST_AFTER, tick=True):
            assert await collect_prometheus_once() == 1  # a first run reads one step: (T0, T0 + 300 s]

        server.stop()
        with time_machine.travel(window_end(2) + JUST_AFTER, tick=True):
            assert await collect_prometheus_once() == 0
        [failed, first] = await runs_of(live, admin, "prometheus", scope)
        assert (failed["status"], at(failed["window_start"]), at(failed["window_end"])) == (
            "failed", window_end(1), window_end(2))
        assert (failed["rows"], failed["unmapped"]) == (0, 0)
        [error] = failed["errors"]
        assert error.startswith(f"Prometheus at {server.base_url} could not be reached: ConnectError")
        assert [(s.window_end, s.quantity) for s in await samples_of(live, scope)] == [(window_end(1), Decimal(30))]
        health = await health_of(live, admin, "prometheus", scope)
        assert (health["last_run"]["status"], health["last_run"]["errors"]) == ("failed", [error])
        assert at(health["read_until"]) == window_end(1)  # the failed window is still to be read

        server.start()
        with time_machine.travel(window_end(3) + JUST_AFTER, tick=True):
            assert await collect_prometheus_once() == 1
            await aggregate_and_check()
    finally:
        server.stop()

    [caught_up, failed_again, first_again] = await runs_of(live, admin, "prometheus", scope)
    assert (failed_again["id"], first_again["id"]) == (failed["id"], first["id"])
    # From the end of the last successful window, the failed one included, to now.
    assert (caught_up["status"], at(caught_up["window_start"]), at(caught_up["window_end"])) == (
        "succeeded", window_end(1), window_end(3))
    assert (caught_up["rows"], caught_up["unmapped"]) == (2, 0)
    assert [(s.window_start, s.window_end, s.quantity) for s in await samples_of(live, scope)] == [
        (window_end(0), window_end(1), Decimal(30)), (window_end(1), window_end(2), Decimal(45)),
        (window_end(2), window_end(3), Decimal(60))]
    [day] = (await daily_of(live, owner.account_id)).values()
    assert day.quantities == {"cpu_core_seconds": "135"}  # what one uninterrupted run over the three reads
    assert day.breakdown == {str(owner.instance_id): {"cpu_core_seconds": "135"}}
    assert at((await health_of(live, admin, "prometheus", scope))["read_until"]) == window_end(3)


# --- OpenCost ---------------------------------------------------------------------------------------------------


async def test_the_opencost_job_stores_each_hours_cost_for_the_account_and_leaves_idle_unmapped(
    live: Live, cluster: Cluster, kube: KubeStandIn,
) -> None:
    admin = await live.admin()
    owner = await tenant(live, cluster)
    scope = str(cluster.id)
    kube.opencost = OpenCost(costs={
        T0: {owner.namespace: 0.5, "__idle__": 0.25, "__unallocated__": 0.01},
        T0 + HOUR: {owner.namespace: 1.25, "__idle__": 0.3},
        T0 + 2 * HOUR: {owner.namespace: 9.0},  # an hour not over yet: not read
    })
    assert await collect_opencost_once() == 0  # not enabled: nothing read, nothing recorded
    assert await runs_of(live, admin, "opencost", scope) == []

    live.configure(opencost_enabled=True)
    await seed_run(live, "opencost", scope, T0, HOUR)
    with time_machine.travel(T0 + 2 * HOUR + JUST_AFTER, tick=True):
        assert await collect_opencost_once() == 1
        await aggregate_and_check()

    window = f"{T0:%Y-%m-%dT%H}%3A00%3A00Z%2C{T0 + 2 * HOUR:%Y-%m-%dT%H}%3A00%3A00Z"
    assert kube.opencost.requests == [f"window={window}&aggregate=namespace&accumulate=false&step=1h"]
    [run, _] = await runs_of(live, admin, "opencost", scope)
    assert (run["status"], at(run["window_start"]), at(run["window_end"])) == ("succeeded", T0, T0 + 2 * HOUR)
    assert (run["rows"], run["unmapped"], run["errors"]) == (5, 3, [])
    assert [(s.subject, s.metric, s.window_start, s.account_id, s.quantity) for s in await samples_of(live, scope)] == [
        ("__idle__", "cost", T0, None, Decimal("0.25")), ("__unallocated__", "cost", T0, None, Decimal("0.01")),
        (owner.namespace, "cost", T0, owner.account_id, Decimal("0.5")),
        ("__idle__", "cost", T0 + HOUR, None, Decimal("0.3")),
        (owner.namespace, "cost", T0 + HOUR, owner.account_id, Decimal("1.25")),
    ]
    [day] = (await daily_of(live, owner.account_id)).values()
    assert (day.day, day.sources, day.quantities) == (T0.date(), ["opencost"], {"cost": "1.75"})
    unmapped = (await live.client.get("/v1/admin/metering/unmapped", headers=admin.headers)).json()["items"]
    assert sorted((i["subject"], i["samples"]) for i in unmapped if i["scope"] == scope) == [
        ("__idle__", 2), ("__unallocated__", 1)]


# --- top spenders ------------------------------------------------------------------------------------------------


async def test_admin_usage_lists_the_top_spenders_of_the_month_and_refuses_others(
    live: Live, scopes: list[str],
) -> None:
    admin = await live.admin()
    plan = await metered_plan(live, admin)
    big, small = await live.signup("Big Spender"), await live.signup("Small Spender")
    for who in (big, small):
        await live.checkout(who, plan)
        scopes.append(who.account_id)
    now = utcnow().replace(minute=0, second=0, microsecond=0)
    # 100 minor units per core-hour past the first: 3 core-hours cost 200, 1.5 cost 50.
    await charge(live, big, str(uuid.uuid4()), 3 * 3600, now)
    await charge(live, small, str(uuid.uuid4()), 5400, now)

    response = await live.client.get("/v1/admin/usage", params={"limit": 200}, headers=admin.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["month"] == now.date().replace(day=1).isoformat()
    spenders = [(s["account_id"], s["account_name"], s["spent_minor"], s["currency"]) for s in body["top_spenders"]]
    mine = [s for s in spenders if s[0] in (big.account_id, small.account_id)]
    assert mine == [(big.account_id, "Big Spender", 200, "EUR"), (small.account_id, "Small Spender", 50, "EUR")]
    assert [s[2] for s in spenders] == sorted((s[2] for s in spenders), reverse=True)  # the top spenders first

    last_month = f"{now.date().replace(day=1) - timedelta(days=1):%Y-%m}"
    before = await live.client.get("/v1/admin/usage", params={"month": last_month, "limit": 200},
                                   headers=admin.headers)
    assert before.status_code == 200
    assert not {s["account_id"] for s in before.json()["top_spenders"]} & {big.account_id, small.account_id}

    for headers in (big.headers, small.headers):
        assert (await live.client.get("/v1/admin/usage", headers=headers)).status_code == 403


# --- purge --------------------------------------------------------------------------------------------------------


async def test_purge_removes_aggregated_samples_past_retention_and_keeps_unaggregated_ones_and_the_daily_sums(
    live: Live, scopes: list[str],
) -> None:
    owner = await live.signup("Purged Co")
    account_id, instance_id = uuid.UUID(owner.account_id), uuid.uuid4()
    scopes.append(owner.account_id)
    now = utcnow()
    old = (now - timedelta(days=40)).replace(minute=0, second=0, microsecond=0)
    recent = now.replace(second=0, microsecond=0)

    async def record(label: str, start: datetime, core_seconds: int, recorded_at: datetime) -> None:
        end = start + timedelta(minutes=5)
        reading = Reading("local", f"local:{instance_id}:{label}:{uuid.uuid4().hex}",
                          Subject(account_id=account_id, instance_id=instance_id), Metric.cpu_core_seconds, start,
                          end, Decimal(core_seconds))
        async with live.container.database.unit_of_work() as session:
            run = await service.record_collection(session, collector="test", scope=owner.account_id,
                                                  window=(start, end), collected=Collected([reading], []),
                                                  started_at=recorded_at, now=recorded_at)
        assert run.rows == 1

    await record("aggregated-old", old, 100, old)
    await record("recent", recent, 7, now)
    await aggregate_and_check()
    await record("unaggregated-old", old, 20, old)  # stored during an aggregation outage, still to be summed
    live.configure(usage_retention_days=30)

    async with live.container.database.reader() as session:
        due = await session.scalar(select(func.count()).select_from(UsageSample).where(
            UsageSample.recorded_at < utcnow() - timedelta(days=30), UsageSample.aggregated_at.is_not(None)))
    purged = await purge()

    assert purged == due and purged >= 1
    kept = {s.source_id.split(":")[2]: (s.quantity, s.aggregated_at is not None)
            for s in await samples_of(live, account_id=account_id)}
    assert kept == {"recent": (Decimal(7), True), "unaggregated-old": (Decimal(20), False)}
    days = await daily_of(live, account_id)
    assert {day: row.quantities for day, row in days.items()} == {
        old.date(): {"cpu_core_seconds": "100"}, recent.date(): {"cpu_core_seconds": "7"}}
    assert await purge() == 0  # nothing left that is due
