"""The node observation: every minute each cluster's nodes and pods are listed and what each node holds is stored
(allocatable, conditions, what is requested and limited on it), so placement decides on fresh facts. A cluster
that cannot be observed keeps its nodes as last seen, with the error on the cluster; the others go on. A
registration asks for its cluster at once (the same task, one cluster)."""

from __future__ import annotations

import uuid

import structlog

from jushostit import container
from jushostit.clusters import kube, service
from jushostit.clusters.observation import summarise
from jushostit.clusters.repository import ClusterRepository
from jushostit.kit.db import utcnow
from jushostit.kit.errors import AppError
from jushostit.kit.jobs import app

log = structlog.get_logger(__name__)


async def observe_cluster(cluster_id: uuid.UUID) -> bool:
    """One cluster observed and stored; False when it could not be (recorded on the cluster)."""
    current = container.current()
    database, timeout = current.database, current.settings.kubernetes_timeout_seconds
    try:
        async with database.reader() as session:
            kubeconfig = await service.kubeconfig_of(session, current.secret_box, cluster_id)
        async with kube.connect(kubeconfig, timeout=timeout) as api:
            nodes, pods = await api.nodes(), await api.pods()
        summaries = summarise(nodes, pods)
    except AppError as error:
        log.warning("clusters.observe_failed", cluster_id=str(cluster_id), code=error.code)
        async with database.unit_of_work() as session:
            await service.record_observe_failure(session, cluster_id=cluster_id, error=error.message)
        return False
    async with database.unit_of_work() as session:
        await service.record_nodes(session, cluster_id=cluster_id, nodes=summaries, now=utcnow())
    return True


@app.task(name=service.OBSERVE_TASK, pass_context=False)
async def observe(cluster_id: str) -> bool:
    return await observe_cluster(uuid.UUID(cluster_id))


@app.periodic(cron="* * * * *", periodic_id="clusters.observe_all")
@app.task(name="clusters.observe_all", queueing_lock="clusters.observe_all", pass_context=False)
async def observe_all(timestamp: int | None = None) -> int:
    """Every cluster, one after the other; returns how many were observed."""
    async with container.current().database.reader() as session:
        cluster_ids = await ClusterRepository(session).ids()
    observed = 0
    for cluster_id in cluster_ids:
        try:
            observed += await observe_cluster(cluster_id)
        except Exception as error:  # noqa: BLE001 - logged; the next minute's run tries it again
            log.error("clusters.observe_crashed", cluster_id=str(cluster_id), error=type(error).__name__)
    return observed
