"""The periodic node observation on committed data, against the stand-in: each cluster's nodes are stored with
what is placed on them; a cluster that cannot be observed keeps its nodes as last seen and says why; a node that
left the cluster is forgotten."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from jushostit.clusters import service, tasks
from jushostit.clusters.repository import ClusterRepository
from jushostit.clusters.schemas import ClusterCreate
from jushostit.models import Cluster, ClusterNode
from tests.clusters.conftest import kubeconfig_for
from tests.clusters.kube_stand_in import GIB_KI, k3s_node, k8s_container, pod


@pytest.fixture
async def cluster(container, kube, kube_server) -> AsyncIterator[Cluster]:
    """A cluster registered and committed, deleted afterwards (its audit entries stay: the log is append-only)."""
    data = ClusterCreate(name=f"observed-{uuid.uuid4().hex[:6]}", kubeconfig=kubeconfig_for(kube_server),
                         base_domain="apps.example.com")
    async with container.database.unit_of_work() as session:
        registered = await service.register(session, container.secret_box, data=data, timeout=5)
    yield registered
    async with container.database.unit_of_work() as session:
        await service.delete(session, cluster_id=registered.id)


async def stored(container, cluster_id: uuid.UUID) -> tuple[Cluster, dict[str, ClusterNode]]:
    async with container.database.reader() as session:
        row = await ClusterRepository(session).by_id(cluster_id)
        nodes = (await ClusterRepository(session).nodes([cluster_id]))[cluster_id]
    assert row is not None
    return row, {node.name: node for node in nodes}


async def test_every_minute_each_clusters_nodes_are_observed_and_stored(container, kube, cluster) -> None:
    kube.nodes = [k3s_node("ryzen-3900x", cpu="24", memory_ki=64 * GIB_KI),
                  k3s_node("core-i7", cpu="16", memory_ki=32 * GIB_KI, ready="False")]
    kube.pods = [pod("app-1", "jh-acme", "ryzen-3900x",
                     [k8s_container("app", {"cpu": "250m", "memory": "512Mi"}, {"cpu": "1", "memory": "1Gi"})])]

    assert await tasks.observe_all() >= 1

    row, nodes = await stored(container, cluster.id)
    assert row.observed_at is not None and row.observe_error is None
    assert set(nodes) == {"ryzen-3900x", "core-i7"}
    big = nodes["ryzen-3900x"]
    assert (big.cpu_allocatable_millicores, big.memory_allocatable_mib) == (24_000, 65_536)
    assert (big.cpu_requested_millicores, big.memory_requested_mib, big.cpu_limits_millicores,
            big.memory_limits_mib, big.pods) == (250, 512, 1_000, 1_024, 1)
    assert nodes["core-i7"].conditions["Ready"] == "False"

    # The cluster goes down: the nodes as last seen stay, with the reason on the cluster.
    kube.outage = 503
    assert await tasks.observe_cluster(cluster.id) is False
    row, nodes = await stored(container, cluster.id)
    assert row.observe_error is not None and "503" in row.observe_error
    assert set(nodes) == {"ryzen-3900x", "core-i7"}

    # Back, without the i7: it is forgotten; an admin's cordon of the other node survives the observation.
    kube.outage = None
    kube.nodes = kube.nodes[:1]
    async with container.database.unit_of_work() as session:
        await service.set_node_cordon(session, cluster_id=cluster.id, node_name="ryzen-3900x", cordoned=True)
    assert await tasks.observe_cluster(cluster.id) is True
    row, nodes = await stored(container, cluster.id)
    assert row.observe_error is None and set(nodes) == {"ryzen-3900x"}
    assert nodes["ryzen-3900x"].cordoned is True
