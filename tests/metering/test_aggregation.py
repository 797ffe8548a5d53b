"""Storing readings and summing them: each reading stored once per source id, summed into usage_daily by
rewriting the day from its samples (never adding to it), marked only after the sums are written, priced from the
month's cumulative usage; namespaces and pods mapped to accounts and instances, anything else unmapped and
never billed; the next window starting where the last successful one ended."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select, update

from jushostit.kit.db import utcnow
from jushostit.metering import service
from jushostit.metering.readings import Collected, Metric, Reading, Subject
from jushostit.metering.repository import MeteringRepository
from jushostit.models import (
    AccountPlacement,
    Cluster,
    Instance,
    MeteringRun,
    Plan,
    Platform,
    Seat,
    SeatProject,
    UsageDaily,
    UsageSample,
)

DAY = datetime(2026, 11, 10, tzinfo=UTC)
PRICING = {"included": {"core_hours": "1"}, "unit_price_minor": {"core_hours": "100", "gb_transferred": "3"}}


async def priced_account(client, session, signup) -> uuid.UUID:
    """An account on the free plan, which prices core-hours beyond the first at 100 minor units (this test's
    plan, rolled back with it)."""
    who = await signup()
    await session.execute(update(Plan).where(Plan.code == "free").values(usage_pricing=PRICING))
    response = await client.post(f"/v1/accounts/{who.account_id}/checkout", json={"plan": "free"},
                                 headers=who.headers)
    assert response.status_code == 201, response.text
    return uuid.UUID(who.account_id)


def local(account_id: uuid.UUID, instance_id: uuid.UUID, metric: Metric, quantity: str, start: datetime,
          seconds: int = 300) -> Reading:
    end = start + timedelta(seconds=seconds)
    return Reading("local", f"local:{instance_id}:{metric.value}:{int(end.timestamp())}",
                   Subject(account_id=account_id, instance_id=instance_id), metric, start, end, Decimal(quantity))


async def store(session, settings, readings: list[Reading], *, collector: str = "local", scope: str = "local",
                warnings: list[str] | None = None) -> MeteringRun:
    window = (min(r.start for r in readings), max(r.end for r in readings))
    return await service.record_collection(session, collector=collector, scope=scope, window=window,
                                           collected=Collected(readings, warnings or []), started_at=utcnow(),
                                           now=utcnow())


async def daily(session, account_id: uuid.UUID) -> list[UsageDaily]:
    session.expire_all()
    return list((await session.scalars(select(UsageDaily).where(UsageDaily.account_id == account_id)
                                       .order_by(UsageDaily.day))).all())


async def test_a_window_read_twice_is_stored_once_and_summed_once(client, session, signup, settings) -> None:
    account_id, instance_id = await priced_account(client, session, signup), uuid.uuid4()
    readings = [local(account_id, instance_id, Metric.cpu_core_seconds, "3600", DAY),
                local(account_id, instance_id, Metric.cpu_core_seconds, "1800", DAY + timedelta(minutes=5))]
    first = await store(session, settings, readings)
    again = await store(session, settings, readings)  # a retried run, or a crash after the samples were written
    assert (first.rows, again.rows) == (2, 0)

    done = await service.aggregate(session, settings, utcnow())
    await service.aggregate(session, settings, utcnow())  # nothing new: changes nothing
    [row] = await daily(session, account_id)
    assert done.samples == 2 and done.accounts == {account_id}
    assert row.quantities == {"cpu_core_seconds": "5400"} and row.day == DAY.date()
    assert row.breakdown == {str(instance_id): {"cpu_core_seconds": "5400"}}
    assert (row.cost_minor, row.currency) == (50, "EUR")  # 1.5 core-hours, the first included: 0.5 x 100


async def test_samples_stored_but_not_summed_before_a_crash_are_summed_by_the_next_aggregation(
    client, session, signup, settings,
) -> None:
    account_id, instance_id = await priced_account(client, session, signup), uuid.uuid4()
    await store(session, settings, [local(account_id, instance_id, Metric.network_transmit_bytes, "1000", DAY)])
    # The run crashed here, after its samples were committed: they are not marked, so nothing is lost.
    unmarked = await session.scalar(select(func.count()).select_from(UsageSample).where(
        UsageSample.account_id == account_id, UsageSample.aggregated_at.is_(None)))
    assert unmarked == 1 and await daily(session, account_id) == []

    await service.aggregate(session, settings, utcnow())
    [row] = await daily(session, account_id)
    assert row.quantities == {"network_transmit_bytes": "1000"}
    assert await session.scalar(select(func.count()).select_from(UsageSample).where(
        UsageSample.account_id == account_id, UsageSample.aggregated_at.is_(None))) == 0


async def test_a_late_sample_rewrites_its_day_from_all_its_samples(client, session, signup, settings) -> None:
    account_id, instance_id = await priced_account(client, session, signup), uuid.uuid4()
    await store(session, settings, [local(account_id, instance_id, Metric.cpu_core_seconds, "3600", DAY)])
    await service.aggregate(session, settings, utcnow())
    late = local(account_id, instance_id, Metric.cpu_core_seconds, "7200", DAY + timedelta(hours=3))
    await store(session, settings, [late])
    await service.aggregate(session, settings, utcnow())
    [row] = await daily(session, account_id)
    assert row.quantities == {"cpu_core_seconds": "10800"} and row.cost_minor == 200


async def test_what_the_plan_includes_is_taken_off_once_a_month_and_the_days_add_up(
    client, session, signup, settings,
) -> None:
    account_id, instance_id = await priced_account(client, session, signup), uuid.uuid4()
    await store(session, settings, [
        local(account_id, instance_id, Metric.cpu_core_seconds, "2700", DAY),  # 0.75 core-hour: included
        local(account_id, instance_id, Metric.cpu_core_seconds, "2700", DAY + timedelta(days=1)),  # 0.25 over
        local(account_id, instance_id, Metric.cpu_core_seconds, "3600", DAY + timedelta(days=2)),
    ])
    await service.aggregate(session, settings, utcnow())
    rows = await daily(session, account_id)
    assert [r.cost_minor for r in rows] == [0, 50, 100]
    assert sum(r.cost_minor for r in rows) == 150  # 1.5 core-hours over the one included, at 100


async def test_peaks_are_maxima_and_totals_are_sums_across_instances(client, session, signup, settings) -> None:
    account_id, one, two = await priced_account(client, session, signup), uuid.uuid4(), uuid.uuid4()
    await store(session, settings, [
        local(account_id, one, Metric.memory_peak_bytes, "100", DAY),
        local(account_id, one, Metric.memory_peak_bytes, "300", DAY + timedelta(minutes=5)),
        local(account_id, two, Metric.memory_peak_bytes, "200", DAY),
        local(account_id, one, Metric.memory_byte_seconds, "30000", DAY),
        local(account_id, two, Metric.memory_byte_seconds, "60000", DAY),
    ])
    await service.aggregate(session, settings, utcnow())
    [row] = await daily(session, account_id)
    assert row.quantities == {"memory_byte_seconds": "90000", "memory_peak_bytes": "300"}
    assert row.breakdown[str(one)] == {"memory_byte_seconds": "30000", "memory_peak_bytes": "300"}


async def test_readings_of_an_account_that_does_not_exist_are_unmapped_and_never_billed(
    client, session, signup, settings,
) -> None:
    ghost = uuid.uuid4()
    run = await store(session, settings, [local(ghost, uuid.uuid4(), Metric.cpu_core_seconds, "99", DAY)])
    await service.aggregate(session, settings, utcnow())
    assert run.unmapped == 1
    assert await session.scalar(select(func.count()).select_from(UsageDaily).where(UsageDaily.account_id == ghost)) == 0
    listed = await MeteringRepository(session).unmapped(DAY - timedelta(days=1), 100)
    assert next(s for s, _, subject, *_ in listed if str(ghost) in subject) == "local"


async def test_namespaces_map_to_accounts_placed_on_that_cluster_and_pods_to_instances_by_slug(
    client, session, signup, settings,
) -> None:
    account_id = await priced_account(client, session, signup)
    cluster = Cluster(name=f"k3s-{uuid.uuid4().hex[:6]}", api_server="https://10.0.0.5:6443", tls_verified=True,
                      kubernetes_version="v1.31.4+k3s1", base_domain="apps.example.com", ingress_class="traefik",
                      ingress_namespace="kube-system", pod_cidr="10.42.0.0/16", service_cidr="10.43.0.0/16",
                      cpu_overcommit=Decimal(3), memory_overcommit=Decimal(1), headroom_percent=30)
    other = Cluster(name=f"edge-{uuid.uuid4().hex[:6]}", api_server="https://10.0.0.6:6443", tls_verified=True,
                    kubernetes_version="v1.31.4+k3s1", base_domain="edge.example.com", ingress_class="traefik",
                    ingress_namespace="kube-system", pod_cidr="10.42.0.0/16", service_cidr="10.43.0.0/16",
                    cpu_overcommit=Decimal(3), memory_overcommit=Decimal(1), headroom_percent=30)
    session.add_all([cluster, other])
    await session.flush()
    session.add(AccountPlacement(account_id=account_id, cluster_id=cluster.id))
    blog, blog_db = uuid.uuid4(), uuid.uuid4()
    session.add_all([
        Instance(id=blog, account_id=account_id, name="blog", slug=f"blog-{blog.hex[:6]}", template_code="ghost",
                 tier="small"),
        Instance(id=blog_db, account_id=account_id, name="blog2", slug=f"blog-{blog.hex[:6]}-2",
                 template_code="ghost", tier="small"),
    ])
    await session.flush()
    namespace = f"jushostit-{account_id}"
    slug = f"blog-{blog.hex[:6]}"

    def k8s(pod: str | None, ns: str = namespace, metric: Metric = Metric.cpu_core_seconds) -> Reading:
        return Reading("prometheus", f"prometheus:{cluster.id}:{metric.value}:{ns}:{pod}:{int(DAY.timestamp())}",
                       Subject(namespace=ns, pod=pod), metric, DAY - timedelta(minutes=5), DAY, Decimal(60),
                       scope=str(cluster.id))

    readings = [k8s(f"{slug}-7d9f8b6c5-x2x4z"), k8s(f"{slug}-2-db-0"), k8s(None, metric=Metric.storage_byte_seconds),
                k8s("coredns-1", ns="kube-system"), k8s("x", ns=f"jushostit-{uuid.uuid4()}")]
    run = await store(session, settings, readings, collector="prometheus", scope=str(cluster.id))
    elsewhere = await store(session, settings, [
        Reading("prometheus", f"p:{other.id}:1", Subject(namespace=namespace, pod="p"), Metric.cpu_core_seconds,
                DAY - timedelta(minutes=5), DAY, Decimal(1), scope=str(other.id))],
        collector="prometheus", scope=str(other.id))

    assert (run.rows, run.unmapped, elsewhere.unmapped) == (5, 2, 1)  # not placed there: not the account's there
    owners = {row.subject: (row.account_id, row.instance_id) for row in (await session.scalars(
        select(UsageSample).where(UsageSample.scope == str(cluster.id)))).all()}
    assert owners[f"{namespace}/{slug}-7d9f8b6c5-x2x4z"] == (account_id, blog)
    assert owners[f"{namespace}/{slug}-2-db-0"] == (account_id, blog_db)  # the longest slug the pod starts with
    assert owners[namespace] == (account_id, None)  # volumes are the account's own
    assert owners["kube-system/coredns-1"] == (None, None)


async def test_a_failed_run_leaves_its_window_to_the_next_successful_run(session, settings) -> None:
    scope = f"test-{uuid.uuid4().hex[:8]}"
    start = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    await service.record_collection(session, collector="prometheus", scope=scope,
                                    window=(start - timedelta(minutes=5), start), collected=Collected([], []),
                                    started_at=start, now=start)
    await service.record_failure(session, collector="prometheus", scope=scope,
                                 window=(start, start + timedelta(minutes=5)), error="connection refused",
                                 started_at=start, now=start)
    last = await MeteringRepository(session).last_window_end("prometheus", scope)
    assert last == start  # the failed window is read again, with what followed it, by the next run
    assert service.next_window(last, start + timedelta(minutes=17), step_seconds=300) == (
        start, start + timedelta(minutes=15))


def test_windows_are_aligned_caught_up_and_capped() -> None:
    now = datetime(2026, 11, 29, 10, 7, 31, tzinfo=UTC)
    at = datetime(2026, 11, 29, 10, 5, tzinfo=UTC)
    assert service.next_window(None, now, step_seconds=300) == (at - timedelta(minutes=5), at)  # a first run
    assert service.next_window(at, now, step_seconds=300) is None  # nothing new yet
    assert service.next_window(at, now, step_seconds=300, lag_seconds=60) is None
    assert service.next_window(at - timedelta(hours=2), now, step_seconds=300) == (at - timedelta(hours=2), at)
    capped = service.next_window(at - timedelta(days=90), now, step_seconds=300, max_catch_up=timedelta(days=35))
    assert capped == (at - timedelta(days=35), at)
    # The interval changed from 60 s to 300 s since the last run: whole 300 s steps from where it ended.
    off_grid = at + timedelta(minutes=1)
    later = off_grid + timedelta(minutes=11, seconds=30)
    assert service.next_window(off_grid, later, step_seconds=300) == (off_grid, off_grid + timedelta(minutes=10))


def test_a_counter_that_starts_again_counts_from_zero() -> None:
    assert service.counter_delta(("p1", Decimal(10)), "p1", Decimal(15), fresh=False) == 5
    assert service.counter_delta(("p1", Decimal(10)), "p2", Decimal(3), fresh=False) == 3  # another process
    assert service.counter_delta(("p1", Decimal(10)), "p1", Decimal(4), fresh=False) == 4  # a reset
    assert service.counter_delta(None, "p1", Decimal(7), fresh=True) == 7  # started within the window
    assert service.counter_delta(None, "p1", Decimal(7), fresh=False) == 0  # only the baseline


async def test_usage_of_a_month_is_priced_by_the_plan_of_that_month(client, session, signup, settings) -> None:
    account_id, instance_id = await priced_account(client, session, signup), uuid.uuid4()
    now = utcnow()
    month_start = datetime(now.year, now.month, 1, tzinfo=UTC)
    await store(session, settings, [local(account_id, instance_id, Metric.cpu_core_seconds, "10800", month_start)])
    await service.aggregate(session, settings, now)
    month = await service.month_to_date(session, settings, account_id, now)
    assert (month.month, month.spent_minor, month.currency) == (date(now.year, now.month, 1), 200, "EUR")
    assert month.forecast_minor >= month.spent_minor


async def test_opencost_costs_of_a_seat_holders_project_namespaces_are_billed_to_the_seats_account(
    client, session, signup, settings
) -> None:
    """The platform's cluster: namespaces Hopsworks runs live seats' projects in go to the seat's account and the
    seat; a namespace no project has is unmapped; the same namespace on another cluster is not the seat's."""
    account_id = await priced_account(client, session, signup)
    shared, other = (Cluster(name=f"{name}-{uuid.uuid4().hex[:6]}", api_server="https://10.0.0.7:6443",
                             tls_verified=True, kubernetes_version="v1.31.4", base_domain="hops.example.com",
                             ingress_class="nginx", ingress_namespace="ingress", pod_cidr="10.42.0.0/16",
                             service_cidr="10.43.0.0/16", cpu_overcommit=Decimal(3), memory_overcommit=Decimal(1),
                             headroom_percent=30) for name in ("hops", "elsewhere"))
    session.add_all([shared, other])
    await session.flush()
    platform = Platform(name=f"hops-{uuid.uuid4().hex[:6]}", kind="hopsworks", base_url="https://hops.example.com",
                        edition="community", project_limits={"owner": 5}, cluster_id=shared.id, checked_at=utcnow())
    seat_id, gone_id = uuid.uuid4(), uuid.uuid4()
    session.add(platform)
    session.add_all([Instance(id=i, account_id=account_id, name=name, slug=f"{name}-{i.hex[:6]}",
                              template_code="seat", tier="seat") for i, name in ((seat_id, "ann"), (gone_id, "bob"))])
    await session.flush()
    session.add_all([Seat(instance_id=seat_id, platform_id=platform.id, email="ann@example.com"),
                     Seat(instance_id=gone_id, platform_id=platform.id, email="bob@example.com", removed_at=utcnow())])
    await session.flush()
    session.add_all([SeatProject(instance_id=seat_id, project_id=119, name="Fraud_Model", namespace="fraud-model"),
                     SeatProject(instance_id=gone_id, project_id=120, name="Old", namespace="old")])
    await session.flush()

    def cost(namespace: str, cluster: Cluster) -> Reading:
        return Reading("opencost", f"opencost:{cluster.id}:{namespace}:{int(DAY.timestamp())}",
                       Subject(namespace=namespace), Metric.cost, DAY - timedelta(hours=1), DAY, Decimal("0.42"),
                       scope=str(cluster.id))

    run = await store(session, settings, [cost("fraud-model", shared), cost("old", shared), cost("spare", shared)],
                      collector="opencost", scope=str(shared.id))
    elsewhere = await store(session, settings, [cost("fraud-model", other)], collector="opencost",
                            scope=str(other.id))
    assert (run.rows, run.unmapped, elsewhere.unmapped) == (3, 2, 1)
    owners = {row.subject: (row.account_id, row.instance_id) for row in (await session.scalars(
        select(UsageSample).where(UsageSample.scope == str(shared.id)))).all()}
    assert owners == {"fraud-model": (account_id, seat_id), "old": (None, None), "spare": (None, None)}

    # Summed into the day with the seat's breakdown, and by project; a second project of the seat adds to both.
    session.add(SeatProject(instance_id=seat_id, project_id=121, name="churn", namespace="churn"))
    await session.flush()
    later = Reading("opencost", f"opencost:{shared.id}:churn:{int(DAY.timestamp())}", Subject(namespace="churn"),
                    Metric.cost, DAY - timedelta(hours=1), DAY, Decimal("0.08"), scope=str(shared.id))
    await store(session, settings, [later], collector="opencost", scope=str(shared.id))
    await service.aggregate(session, settings, utcnow())
    [day] = await daily(session, account_id)
    assert day.breakdown == {str(seat_id): {"cost": "0.50"}}
    assert day.project_breakdown == {"churn": {"cost": "0.08"}, "fraud-model": {"cost": "0.42"}}
    buckets = await service.usage_buckets(session, account_id, start=DAY - timedelta(days=1), end=DAY + timedelta(days=1),
                                          granularity="day")
    assert [b.per_project for b in buckets] == [{"churn": {"cost": Decimal("0.08")}, "fraud-model": {"cost": Decimal("0.42")}}]
    hourly = await service.usage_buckets(session, account_id, start=DAY - timedelta(hours=1), end=DAY,
                                         granularity="hour")
    assert hourly[0].per_project == {"churn": {"cost": Decimal("0.08")}, "fraud-model": {"cost": Decimal("0.42")}}
