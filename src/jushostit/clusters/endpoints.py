"""Platform admins register Kubernetes clusters, see their nodes' utilisation, cordon clusters and nodes, and
delete a cluster no account is on. A kubeconfig goes in once and never comes out."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit import container
from jushostit.auth.dependencies import require_admin
from jushostit.clusters import service
from jushostit.clusters.placement import BURSTABLE_POD, ClusterState, Node, Policy, budget, room_for
from jushostit.clusters.repository import ClusterRepository
from jushostit.clusters.schemas import (
    ClusterCreate,
    ClusterList,
    ClusterRead,
    NodeRead,
    PolicyRead,
    Utilisation,
)
from jushostit.kit.db import SessionDep
from jushostit.kit.errors import ErrorResponse, NotFound, conflicts, responses
from jushostit.models import Cluster, ClusterNode

router = APIRouter(prefix="/v1/admin/clusters", tags=["admin", "clusters"], dependencies=[Depends(require_admin())])

NodeName = Annotated[str, Path(max_length=253, description="The node's name in Kubernetes")]
CLUSTER_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "`invalid_kubeconfig` (`details.field` names the field), `cluster_credentials_refused`, "
                         "`cluster_permissions_missing` (`details.missing` lists them), or `validation_error`"},
    502: {"model": ErrorResponse, "description": "`cluster_unreachable`, `cluster_tls_failed` or `cluster_bad_answer`: the connection "
                         "test could not talk to the cluster; nothing was recorded"},
}


def _utilisation(nodes: list[Node], policy: Policy) -> Utilisation:
    budgets = [budget(node, policy) for node in nodes]
    return Utilisation(
        cpu_requested_millicores=sum(n.cpu_requested_millicores for n in nodes),
        cpu_requests_budget_millicores=sum(b.cpu_requests_millicores for b in budgets),
        memory_requested_mib=sum(n.memory_requested_mib for n in nodes),
        memory_requests_budget_mib=sum(b.memory_requests_mib for b in budgets),
        cpu_limits_millicores=sum(n.cpu_limits_millicores for n in nodes),
        cpu_limits_budget_millicores=sum(b.cpu_limits_millicores for b in budgets),
        memory_limits_mib=sum(n.memory_limits_mib for n in nodes),
        memory_limits_budget_mib=sum(b.memory_limits_mib for b in budgets),
        pods=sum(n.pods for n in nodes), pods_allocatable=sum(b.pods for b in budgets),
        burstable_pods_left=sum(room_for(n, policy, BURSTABLE_POD) for n in nodes),
    )


def _node_read(row: ClusterNode, state: Node, policy: Policy) -> NodeRead:
    return NodeRead(
        name=row.name, ready=state.ready, conditions={str(k): str(v) for k, v in row.conditions.items()},
        unschedulable=row.unschedulable, no_schedule_taints=[str(key) for key in row.no_schedule_taints],
        cordoned=row.cordoned, takes_placements=state.refusal is None, refusal=state.refusal,
        cpu_capacity_millicores=row.cpu_capacity_millicores, memory_capacity_mib=row.memory_capacity_mib,
        cpu_allocatable_millicores=row.cpu_allocatable_millicores, memory_allocatable_mib=row.memory_allocatable_mib,
        utilisation=_utilisation([state], policy), observed_at=row.observed_at,
    )


def cluster_read(cluster: Cluster, nodes: list[ClusterNode], accounts: int) -> ClusterRead:
    state: ClusterState = service.cluster_state(cluster, nodes)
    return ClusterRead(
        id=cluster.id, name=cluster.name, api_server=cluster.api_server, tls_verified=cluster.tls_verified,
        kubernetes_version=cluster.kubernetes_version, base_domain=cluster.base_domain,
        ingress_class=cluster.ingress_class, cert_issuer=cluster.cert_issuer,
        ingress_namespace=cluster.ingress_namespace, pod_cidr=cluster.pod_cidr, service_cidr=cluster.service_cidr,
        policy=PolicyRead(cpu_overcommit=float(cluster.cpu_overcommit),
                          memory_overcommit=float(cluster.memory_overcommit),
                          headroom_percent=cluster.headroom_percent),
        cordoned=cluster.cordoned, accounts=accounts, observed_at=cluster.observed_at,
        observe_error=cluster.observe_error,
        utilisation=_utilisation([node for node in state.nodes if node.refusal is None], state.policy),
        nodes=[_node_read(row, node, state.policy) for row, node in zip(nodes, state.nodes, strict=True)],
        created_at=cluster.created_at,
    )


async def cluster_reads(session: AsyncSession, clusters: list[Cluster]) -> list[ClusterRead]:
    repository = ClusterRepository(session)
    ids = [cluster.id for cluster in clusters]
    nodes, accounts = await repository.nodes(ids), await repository.placed_accounts(ids)
    return [cluster_read(cluster, nodes[cluster.id], accounts.get(cluster.id, 0)) for cluster in clusters]


async def _read_one(session: SessionDep, cluster_id: uuid.UUID) -> ClusterRead:
    cluster = await ClusterRepository(session).by_id(cluster_id)
    if cluster is None:
        raise NotFound("Cluster not found", code="cluster_not_found")
    return (await cluster_reads(session, [cluster]))[0]


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=ClusterRead,
    responses={**responses(401, 403), **CLUSTER_ERRORS,
               **conflicts({"cluster_name_taken": "a cluster of that name is registered"})},
)
async def register_cluster(body: ClusterCreate, session: SessionDep) -> ClusterRead:
    """Registers a cluster after a connection test: `GET /version`, then a SelfSubjectAccessReview for each
    permission JusHostIt needs (create, patch, delete and list namespaces, quotas, limit ranges, network policies,
    service accounts, secrets, volume claims, services, deployments, stateful sets, ingresses and pods in every
    namespace; list nodes; read pod logs). A cluster that fails it is not recorded. The kubeconfig is stored
    encrypted and never returned. Audited; its nodes are observed at once, then every minute."""
    settings, box = container.current().settings, container.current().secret_box
    cluster = await service.register(session, box, data=body, timeout=settings.kubernetes_timeout_seconds)
    return (await cluster_reads(session, [cluster]))[0]


@router.get("", response_model=ClusterList, responses=responses(401, 403))
async def list_clusters(session: SessionDep) -> ClusterList:
    """Every cluster by name, with its nodes as last observed and the utilisation of each against the capacity
    policy (what the nodes that take placements hold, per cluster)."""
    return ClusterList(items=await cluster_reads(session, await ClusterRepository(session).all()))


@router.get("/{cluster_id}", response_model=ClusterRead, responses=responses(401, 403, 404))
async def get_cluster(cluster_id: uuid.UUID, session: SessionDep) -> ClusterRead:
    return await _read_one(session, cluster_id)


@router.post("/{cluster_id}/cordon", response_model=ClusterRead, responses=responses(401, 403, 404))
async def cordon_cluster(cluster_id: uuid.UUID, session: SessionDep) -> ClusterRead:
    """No new account is placed on the cluster; its accounts stay, and their new instances still go there.
    Audited."""
    await service.set_cordon(session, cluster_id=cluster_id, cordoned=True)
    return await _read_one(session, cluster_id)


@router.post("/{cluster_id}/uncordon", response_model=ClusterRead, responses=responses(401, 403, 404))
async def uncordon_cluster(cluster_id: uuid.UUID, session: SessionDep) -> ClusterRead:
    await service.set_cordon(session, cluster_id=cluster_id, cordoned=False)
    return await _read_one(session, cluster_id)


@router.post("/{cluster_id}/nodes/{node_name}/cordon", response_model=ClusterRead, responses=responses(401, 403, 404))
async def cordon_node(cluster_id: uuid.UUID, node_name: NodeName, session: SessionDep) -> ClusterRead:
    """No new pod is placed on the node by JusHostIt (Kubernetes' own cordon is left alone). Audited."""
    await service.set_node_cordon(session, cluster_id=cluster_id, node_name=node_name, cordoned=True)
    return await _read_one(session, cluster_id)


@router.post(
    "/{cluster_id}/nodes/{node_name}/uncordon", response_model=ClusterRead, responses=responses(401, 403, 404)
)
async def uncordon_node(cluster_id: uuid.UUID, node_name: NodeName, session: SessionDep) -> ClusterRead:
    await service.set_node_cordon(session, cluster_id=cluster_id, node_name=node_name, cordoned=False)
    return await _read_one(session, cluster_id)


@router.delete(
    "/{cluster_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
    responses={**responses(401, 403, 404), **conflicts({"cluster_in_use": "accounts are placed on it"})},
)
async def delete_cluster(cluster_id: uuid.UUID, session: SessionDep) -> Response:
    """Forgets a cluster no account is placed on, with its nodes and its kubeconfig. Audited."""
    await service.delete(session, cluster_id=cluster_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
