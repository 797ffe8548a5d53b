"""Clusters: registration (a connection test first, so nothing is half-registered), cordons, deletion, storing
what the node observation saw, placing accounts and taking public hosts. Never commits; every change is audited
in its transaction.

The kubeconfig is a stored secret of the cluster (vault, owner_type `cluster`): encrypted with the secret box,
re-encrypted by `jushostit keys rotate`, decrypted only to talk to the cluster, never returned nor logged.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit
from jushostit.clusters import kube
from jushostit.clusters.kubeconfig import AcceptedKubeconfig, accept_kubeconfig
from jushostit.clusters.observation import NodeSummary, is_ready, pressures
from jushostit.clusters.placement import (
    NO_CAPACITY,
    ClusterState,
    Node,
    Placed,
    Pod,
    Policy,
    choose_cluster,
    fits,
)
from jushostit.clusters.repository import ClusterRepository
from jushostit.clusters.schemas import ClusterCreate
from jushostit.kit import jobs
from jushostit.kit.crypto import SecretBox
from jushostit.kit.errors import Conflict, NotFound
from jushostit.models import Cluster, ClusterNode
from jushostit.vault import service as vault

SECRET_OWNER = "cluster"
KUBECONFIG_SECRET = "kubeconfig"
OBSERVE_TASK = "clusters.observe"


def _audited(cluster: Cluster) -> dict[str, object]:
    """What the audit log says of a cluster: never its kubeconfig."""
    return {
        "name": cluster.name, "api_server": cluster.api_server, "tls_verified": cluster.tls_verified,
        "kubernetes_version": cluster.kubernetes_version, "base_domain": cluster.base_domain,
        "cpu_overcommit": str(cluster.cpu_overcommit), "memory_overcommit": str(cluster.memory_overcommit),
        "headroom_percent": cluster.headroom_percent, "cordoned": cluster.cordoned,
    }


async def register(session: AsyncSession, box: SecretBox, *, data: ClusterCreate, timeout: float) -> Cluster:
    """Accept the kubeconfig (422 `invalid_kubeconfig`), refuse a name in use (409 `cluster_name_taken`), run the
    connection test (502/422, see kube) and only then record the cluster with its kubeconfig encrypted, audited,
    and ask for its nodes to be observed at once."""
    accepted = accept_kubeconfig(data.kubeconfig)
    repository = ClusterRepository(session)
    if await repository.name_taken(data.name):
        raise _name_taken(data.name)
    version = await kube.check_connection(accepted, timeout=timeout)
    cluster = await repository.add({
        "name": data.name, "api_server": accepted.server, "tls_verified": accepted.tls_verified,
        "kubernetes_version": version, "base_domain": data.base_domain, "ingress_class": data.ingress_class,
        "cert_issuer": data.cert_issuer, "ingress_namespace": data.ingress_namespace, "pod_cidr": data.pod_cidr,
        "service_cidr": data.service_cidr, "cpu_overcommit": Decimal(str(data.cpu_overcommit)),
        "memory_overcommit": Decimal(str(data.memory_overcommit)), "headroom_percent": data.headroom_percent,
        "cordoned": False,
    })
    if cluster is None:  # registered meanwhile under the same name
        raise _name_taken(data.name)
    await vault.put(session, box, owner_type=SECRET_OWNER, owner_id=cluster.id, name=KUBECONFIG_SECRET,
                    value=accepted.serialized())
    await audit.record(session, action="cluster.registered", target_type="cluster", target_id=cluster.id,
                       after=_audited(cluster))
    jobs.enqueue(OBSERVE_TASK, queueing_lock=f"{OBSERVE_TASK}:{cluster.id}", cluster_id=str(cluster.id))
    return cluster


def _name_taken(name: str) -> Conflict:
    return Conflict(f"A cluster named {name!r} is registered already", code="cluster_name_taken")


async def kubeconfig_of(session: AsyncSession, box: SecretBox, cluster_id: uuid.UUID) -> AcceptedKubeconfig:
    """The cluster's kubeconfig, decrypted and checked again (as when it was registered)."""
    secrets = await vault.read(session, box, owner_type=SECRET_OWNER, owner_id=cluster_id)
    if KUBECONFIG_SECRET not in secrets:
        raise NotFound("Cluster not found", code="cluster_not_found")
    return accept_kubeconfig(secrets[KUBECONFIG_SECRET])


async def _cluster(session: AsyncSession, cluster_id: uuid.UUID) -> Cluster:
    cluster = await ClusterRepository(session).by_id(cluster_id, for_update=True)
    if cluster is None:
        raise NotFound("Cluster not found", code="cluster_not_found")
    return cluster


async def set_cordon(session: AsyncSession, *, cluster_id: uuid.UUID, cordoned: bool) -> Cluster:
    """A cordoned cluster takes no new accounts; its accounts stay and their instances still go there. Setting
    it again changes nothing and records nothing."""
    cluster = await _cluster(session, cluster_id)
    if cluster.cordoned != cordoned:
        cluster.cordoned = cordoned
        await session.flush()
        await audit.record(session, action="cluster.cordoned" if cordoned else "cluster.uncordoned",
                           target_type="cluster", target_id=cluster.id, before={"cordoned": not cordoned},
                           after={"cordoned": cordoned, "name": cluster.name})
    return cluster


async def set_node_cordon(session: AsyncSession, *, cluster_id: uuid.UUID, node_name: str, cordoned: bool) -> Cluster:
    """A cordoned node takes no new pods in our placement (Kubernetes' own cordon is not touched)."""
    cluster = await _cluster(session, cluster_id)
    node = await ClusterRepository(session).node(cluster.id, node_name)
    if node is None:
        raise NotFound("Node not found", code="node_not_found")
    if node.cordoned != cordoned:
        node.cordoned = cordoned
        await session.flush()
        await audit.record(session, action="cluster.node_cordoned" if cordoned else "cluster.node_uncordoned",
                           target_type="cluster", target_id=cluster.id, before={"node": node_name,
                           "cordoned": not cordoned}, after={"node": node_name, "cordoned": cordoned})
    return cluster


async def delete(session: AsyncSession, *, cluster_id: uuid.UUID) -> None:
    """Only a cluster no account is placed on (409 `cluster_in_use`): its nodes, hosts and kubeconfig go with it."""
    cluster = await _cluster(session, cluster_id)
    repository = ClusterRepository(session)
    placed = (await repository.placed_accounts([cluster.id])).get(cluster.id, 0)
    if placed:
        raise Conflict(f"{placed} account(s) are placed on the cluster {cluster.name!r}", code="cluster_in_use",
                       details={"accounts": placed})
    before = _audited(cluster)
    await vault.forget(session, owner_type=SECRET_OWNER, owner_id=cluster.id)
    await repository.delete(cluster)
    await audit.record(session, action="cluster.deleted", target_type="cluster", target_id=cluster_id, before=before)


# --- what the node observation saw -------------------------------------------------------------------------------


async def record_nodes(
    session: AsyncSession, *, cluster_id: uuid.UUID, nodes: Sequence[NodeSummary], now: datetime
) -> None:
    cluster = await ClusterRepository(session).by_id(cluster_id, for_update=True)
    if cluster is None:  # deleted while it was observed
        return
    values = []
    for node in nodes:
        fields = asdict(node)
        fields["no_schedule_taints"] = list(node.no_schedule_taints)
        values.append(fields)
    await ClusterRepository(session).store_nodes(cluster_id, values, now)
    cluster.observed_at, cluster.observe_error = now, None
    await session.flush()


async def record_observe_failure(session: AsyncSession, *, cluster_id: uuid.UUID, error: str) -> None:
    """The last observation failed: the nodes as last seen stay (and keep deciding placements) until one succeeds."""
    cluster = await ClusterRepository(session).by_id(cluster_id, for_update=True)
    if cluster is not None:
        cluster.observe_error = error[:500]
        await session.flush()


# --- placement ---------------------------------------------------------------------------------------------------


def policy_of(cluster: Cluster) -> Policy:
    return Policy(Decimal(cluster.cpu_overcommit), Decimal(cluster.memory_overcommit), cluster.headroom_percent)


def node_state(row: ClusterNode) -> Node:
    conditions = {str(kind): str(value) for kind, value in row.conditions.items()}
    return Node(
        name=row.name, cpu_allocatable_millicores=row.cpu_allocatable_millicores,
        memory_allocatable_mib=row.memory_allocatable_mib, pods_allocatable=row.pods_allocatable,
        cpu_requested_millicores=row.cpu_requested_millicores, memory_requested_mib=row.memory_requested_mib,
        cpu_limits_millicores=row.cpu_limits_millicores, memory_limits_mib=row.memory_limits_mib, pods=row.pods,
        ready=is_ready(conditions), pressure=pressures(conditions), unschedulable=row.unschedulable,
        no_schedule_taints=tuple(str(key) for key in row.no_schedule_taints), cordoned=row.cordoned,
    )


def cluster_state(cluster: Cluster, nodes: Sequence[ClusterNode]) -> ClusterState:
    return ClusterState(cluster.id, cluster.name, policy_of(cluster), tuple(node_state(n) for n in nodes),
                        cluster.cordoned)


async def _states(session: AsyncSession, clusters: Sequence[Cluster]) -> list[ClusterState]:
    nodes = await ClusterRepository(session).nodes([cluster.id for cluster in clusters])
    return [cluster_state(cluster, nodes[cluster.id]) for cluster in clusters]


async def place_account(session: AsyncSession, *, account_id: uuid.UUID, pods: Sequence[Pod]) -> uuid.UUID:
    """The account's cluster: where it already is, or, for an account not placed yet, the one `choose_cluster`
    picks for its first `pods` (recorded and audited). 409 `no_capacity` with the reason when none fits. The
    caller holds the account's lock, so an account is placed once."""
    repository = ClusterRepository(session)
    placed = await repository.placement_of(account_id)
    if placed is not None:
        return placed
    decision = choose_cluster(await _states(session, await repository.all()), pods)
    if not isinstance(decision, Placed):
        raise Conflict(decision.reason, code="no_capacity", details={"reason": decision.reason})
    await repository.place(account_id, decision.cluster.id)
    await audit.record(session, action="account.placed", target_type="account", target_id=account_id,
                       account_id=account_id, after={"cluster": decision.cluster.name,
                                                     "cluster_id": str(decision.cluster.id)})
    return decision.cluster.id


async def admission(session: AsyncSession, *, account_id: uuid.UUID, pods: Sequence[Pod]) -> str | None:
    """None when a new instance's `pods` fit the account's cluster, else why not ("no capacity"); an account not
    placed yet is placed by `place_account` instead."""
    repository = ClusterRepository(session)
    cluster_id = await repository.placement_of(account_id)
    cluster = await repository.by_id(cluster_id) if cluster_id is not None else None
    if cluster is None:
        return NO_CAPACITY
    return fits((await _states(session, [cluster]))[0], pods)


async def place_instance(session: AsyncSession, *, account_id: uuid.UUID, pods: Sequence[Pod]) -> uuid.UUID:
    """The cluster a new instance of `pods` goes to: its account's, when they fit there; an account not placed
    yet is placed now (`place_account`). 409 `no_capacity` with the reason otherwise. The caller holds the
    account's lock."""
    cluster_id = await ClusterRepository(session).placement_of(account_id)
    if cluster_id is None:
        return await place_account(session, account_id=account_id, pods=pods)
    problem = await admission(session, account_id=account_id, pods=pods)
    if problem is not None:
        reason = f"{problem}: the instance does not fit its account's cluster"
        raise Conflict(reason, code="no_capacity", details={"reason": reason})
    return cluster_id


async def claim_host(session: AsyncSession, *, cluster_id: uuid.UUID, host: str, instance_id: uuid.UUID) -> None:
    """Take a public host in the cluster for the instance: 409 `host_taken` when another instance holds it.
    Taking it again for the same instance changes nothing."""
    normalized = host.lower().rstrip(".")
    holder = await ClusterRepository(session).claim_host(cluster_id, normalized, instance_id)
    if holder != instance_id:
        raise Conflict(f"The host {normalized} is taken on this cluster", code="host_taken",
                       details={"host": normalized})


async def release_hosts(session: AsyncSession, *, instance_id: uuid.UUID) -> None:
    await ClusterRepository(session).release_hosts(instance_id)
