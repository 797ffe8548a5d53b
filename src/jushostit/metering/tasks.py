"""Metering's jobs: the collectors (the local runtime and each cluster's Prometheus every
JUSHOSTIT_METERING_INTERVAL_SECONDS, OpenCost hourly), each followed by the aggregation and the budget check;
the daily Stripe usage report; the daily purge of raw samples.

Every collection reads the window from the end of the last successful one to now, so a missed or failed run
is caught up by the next; a window stored twice is stored once (source ids). A crash anywhere repeats work,
never loses or doubles it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import httpx
import structlog

from jushostit import container
from jushostit.billing.stripe_api import stripe_client
from jushostit.clusters import kube
from jushostit.clusters import service as clusters
from jushostit.clusters.repository import ClusterRepository
from jushostit.config import Settings
from jushostit.kit.db import utcnow
from jushostit.kit.errors import AppError
from jushostit.kit.jobs import app, interval_cron
from jushostit.metering import local, opencost, prometheus, service, stripe_usage
from jushostit.metering.readings import Collected, SourceUnavailable
from jushostit.metering.repository import MeteringRepository
from jushostit.models import Cluster
from jushostit.runtime.registry import local_driver

log = structlog.get_logger(__name__)

COLLECT_LOCAL = "metering.collect_local"
COLLECT_PROMETHEUS = "metering.collect_prometheus"
COLLECT_OPENCOST = "metering.collect_opencost"
REPORT_TASK = "metering.report_to_stripe"
OPENCOST_STEP_SECONDS = 3600
PROMETHEUS_TIMEOUT_SECONDS = 30.0


async def aggregate_and_check() -> set[uuid.UUID]:
    """Every sample not yet summed, in batches (each committed), then the budgets of the accounts touched."""
    current = container.current()
    touched: set[uuid.UUID] = set()
    after = 0
    while True:
        async with current.database.unit_of_work() as session:
            done = await service.aggregate(session, current.settings, utcnow(), after=after)
        touched |= done.accounts
        after = done.last_id
        if done.samples < current.settings.metering_aggregate_batch:
            break
    if touched:
        async with current.database.unit_of_work() as session:
            await service.check_budgets(session, current.settings, touched, utcnow())
    return touched


async def next_window(collector: str, scope: str, step_seconds: int, now: datetime, *,
                      lag_seconds: int = 0) -> tuple[datetime, datetime] | None:
    """The window a collector reads now: from the end of its last successful run (see service.next_window)."""
    current = container.current()
    async with current.database.reader() as session:
        last_end = await MeteringRepository(session).last_window_end(collector, scope)
    return service.next_window(last_end, now, step_seconds=step_seconds, lag_seconds=lag_seconds,
                               max_catch_up=timedelta(days=current.settings.usage_retention_days))


async def run_collector(collector: str, scope: str, step_seconds: int, *, lag_seconds: int = 0,
                        read: Callable[[datetime, datetime], Awaitable[Collected]]) -> bool:
    """One run of one collector over its next window: its readings and the run stored together, or the failure
    recorded and the window left for the next run. The source is read outside any transaction. False when there
    was nothing to read or it failed."""
    database, now = container.current().database, utcnow()
    window = await next_window(collector, scope, step_seconds, now, lag_seconds=lag_seconds)
    if window is None:
        return False
    try:
        collected = await read(*window)
    except SourceUnavailable as error:
        log.warning("metering.collect_failed", collector=collector, scope=scope, error=str(error)[:300])
        async with database.unit_of_work() as session:
            await service.record_failure(session, collector=collector, scope=scope, window=window, error=str(error),
                                         started_at=now, now=utcnow())
        return False
    async with database.unit_of_work() as session:
        await service.record_collection(session, collector=collector, scope=scope, window=window,
                                        collected=collected, started_at=now, now=utcnow())
    return True


async def collect_local_once() -> bool:
    """The local runtime's usage, read inside the transaction that stores it: its counters move on with it."""
    current = container.current()
    now = utcnow()
    window = await next_window(local.SOURCE, local.SCOPE, current.settings.metering_interval_seconds, now)
    if window is None:
        return False
    async with current.database.unit_of_work() as session:
        collected = await local.collect(session, local_driver(current.settings), start=window[0], end=window[1])
        await service.record_collection(session, collector=local.SOURCE, scope=local.SCOPE, window=window,
                                        collected=collected, started_at=now, now=utcnow())
    return True


def prometheus_url(settings: Settings, cluster: Cluster, clusters_registered: int) -> str | None:
    """The cluster's Prometheus: named for it, or the one unnamed URL when it is the only cluster."""
    if cluster.name in settings.prometheus_url:
        return settings.prometheus_url[cluster.name]
    return settings.prometheus_url.get("") if clusters_registered == 1 else None


async def collect_prometheus_once() -> int:
    current = container.current()
    settings = current.settings
    async with current.database.reader() as session:
        registered = await ClusterRepository(session).all()
    collected = 0
    for cluster in registered:
        url = prometheus_url(settings, cluster, len(registered))
        if url is None:
            continue

        async def read(start: datetime, end: datetime, url: str = url, cluster: Cluster = cluster) -> Collected:
            async with httpx.AsyncClient(base_url=url, timeout=PROMETHEUS_TIMEOUT_SECONDS) as client:
                return await prometheus.collect(client, start=start, end=end,
                                                step_seconds=settings.metering_interval_seconds,
                                                scope=str(cluster.id))

        collected += await run_collector(prometheus.SOURCE, str(cluster.id), settings.metering_interval_seconds,
                                         lag_seconds=settings.prometheus_lag_seconds, read=read)
    return collected


async def collect_opencost_once() -> int:
    current = container.current()
    database, settings, box = current.database, current.settings, current.secret_box
    if not settings.opencost_enabled:
        return 0
    async with database.reader() as session:
        cluster_ids = await ClusterRepository(session).ids()
    collected = 0
    for cluster_id in cluster_ids:

        async def read(start: datetime, end: datetime, cluster_id: uuid.UUID = cluster_id) -> Collected:
            try:
                async with database.reader() as session:
                    kubeconfig = await clusters.kubeconfig_of(session, box, cluster_id)
                async with kube.connect(kubeconfig, timeout=settings.kubernetes_timeout_seconds) as api:
                    return await opencost.collect(api, start=start, end=end, scope=str(cluster_id),
                                                  namespace=settings.opencost_namespace,
                                                  service=settings.opencost_service)
            except AppError as error:  # the cluster itself could not be reached
                raise SourceUnavailable(error.message) from error

        collected += await run_collector(opencost.SOURCE, str(cluster_id), OPENCOST_STEP_SECONDS, read=read)
    return collected


@app.task(name=COLLECT_LOCAL, queueing_lock=COLLECT_LOCAL, pass_context=False)
async def collect_local(timestamp: int | None = None) -> bool:
    collected = await collect_local_once()
    await aggregate_and_check()
    return collected


@app.task(name=COLLECT_PROMETHEUS, queueing_lock=COLLECT_PROMETHEUS, pass_context=False)
async def collect_prometheus(timestamp: int | None = None) -> int:
    collected = await collect_prometheus_once()
    await aggregate_and_check()
    return collected


@app.periodic(cron="7 * * * *", periodic_id=COLLECT_OPENCOST)
@app.task(name=COLLECT_OPENCOST, queueing_lock=COLLECT_OPENCOST, pass_context=False)
async def collect_opencost(timestamp: int | None = None) -> int:
    collected = await collect_opencost_once()
    await aggregate_and_check()
    return collected


@app.periodic(cron="23 2 * * *", periodic_id=REPORT_TASK)
@app.task(name=REPORT_TASK, queueing_lock=REPORT_TASK, pass_context=False)
async def report_to_stripe(timestamp: int | None = None) -> int:
    """The daily Stripe usage report (also deferred by an admin's "sync now")."""
    current = container.current()
    return await stripe_usage.sync(current.database, current.settings, utcnow())


@app.periodic(cron="37 * * * *", periodic_id="metering.resend_to_stripe")
@app.task(name="metering.resend_to_stripe", queueing_lock="metering.resend_to_stripe", pass_context=False)
async def resend_to_stripe(timestamp: int | None = None) -> int:
    """Hourly: events a failed or crashed report left pending are sent again while Stripe still deduplicates
    their identifiers (24 hours)."""
    current = container.current()
    client = stripe_client(current.settings)
    if client is None:
        return 0
    async with current.database.unit_of_work() as session:
        return await stripe_usage.send_pending(session, client, utcnow())


@app.periodic(cron="51 3 * * *", periodic_id="metering.purge")
@app.task(name="metering.purge", queueing_lock="metering.purge", pass_context=False)
async def purge(timestamp: int | None = None) -> int:
    """Raw samples past their retention (their daily sums stay)."""
    current = container.current()
    async with current.database.unit_of_work() as session:
        return await MeteringRepository(session).purge_samples(
            utcnow() - timedelta(days=current.settings.usage_retention_days))


def schedule_collectors(settings: Settings) -> None:
    """Register the collectors' periodic runs at the configured interval (once per process): the local
    runtime's where instances run as local processes, each cluster's Prometheus on Kubernetes."""
    cron = interval_cron(settings.metering_interval_seconds)
    if settings.runtime == "local":
        if (COLLECT_LOCAL, COLLECT_LOCAL) not in app.periodic_registry.periodic_tasks:
            app.periodic(cron=cron, periodic_id=COLLECT_LOCAL)(collect_local)
    elif (COLLECT_PROMETHEUS, COLLECT_PROMETHEUS) not in app.periodic_registry.periodic_tasks:
        app.periodic(cron=cron, periodic_id=COLLECT_PROMETHEUS)(collect_prometheus)
