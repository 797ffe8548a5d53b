"""Placement: which cluster a new account goes to, and whether a new instance fits the account's cluster. Pure:
observed capacity and the capacity policy in, a decision out.

The burstable model: each pod asks for little (its requests, which the scheduler reserves) and may burst to its
limits. On each node that takes placements we keep two budgets per resource, each less the policy's headroom:

- **requests** may reach allocatable x (1 - headroom): the scheduler's own rule, with room kept free;
- **limits** may reach allocatable x overcommit x (1 - headroom): how far bursts may be oversubscribed.

Memory is not compressible (a node short of it kills pods), so its overcommit is 1 unless an operator says
otherwise. A node's pod count (`pods_allocatable`, 110 by default) is a hard limit too. What is already placed on
a node counts against both budgets, whoever placed it: a pod without a limit counts its request there.

A pod fits a node when every budget still has room for it; an account's pods fit a cluster when they can all be
put on its nodes that take placements (first fit, largest first). A new account goes to the cluster where it
fits with the most memory left (spreading accounts); an account stays in its cluster, and an instance that does
not fit there is refused with "no capacity", never oversubscribed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_FLOOR, Decimal

from jushostit.catalog.spec import TemplateSpec

NO_CAPACITY = "no capacity"
PRESSURE_CONDITIONS = ("MemoryPressure", "DiskPressure", "PIDPressure")


@dataclass(frozen=True)
class Pod:
    cpu_request_millicores: int
    memory_request_mib: int
    cpu_limit_millicores: int
    memory_limit_mib: int


# The default pod of the burstable model: requests 0.25 vCPU / 512 MiB, limits 1 vCPU / 1 GiB.
BURSTABLE_POD = Pod(cpu_request_millicores=250, memory_request_mib=512, cpu_limit_millicores=1000, memory_limit_mib=1024)


@dataclass(frozen=True)
class Policy:
    cpu_overcommit: Decimal
    memory_overcommit: Decimal
    headroom_percent: int


@dataclass(frozen=True)
class Node:
    name: str
    cpu_allocatable_millicores: int
    memory_allocatable_mib: int
    pods_allocatable: int
    cpu_requested_millicores: int = 0
    memory_requested_mib: int = 0
    cpu_limits_millicores: int = 0
    memory_limits_mib: int = 0
    pods: int = 0
    ready: bool = True
    pressure: tuple[str, ...] = ()  # conditions among PRESSURE_CONDITIONS that are True
    unschedulable: bool = False  # spec.unschedulable: cordoned in Kubernetes
    no_schedule_taints: tuple[str, ...] = ()
    cordoned: bool = False  # cordoned by us

    @property
    def refusal(self) -> str | None:
        """Why the node takes no placements, or None when it does."""
        if not self.ready:
            return "not Ready"
        if self.cordoned:
            return "cordoned"
        if self.unschedulable:
            return "unschedulable (cordoned in Kubernetes)"
        if self.pressure:
            return "under " + ", ".join(self.pressure)
        if self.no_schedule_taints:
            return "tainted NoSchedule: " + ", ".join(self.no_schedule_taints)
        return None

    def with_pod(self, pod: Pod) -> Node:
        return replace(
            self,
            cpu_requested_millicores=self.cpu_requested_millicores + pod.cpu_request_millicores,
            memory_requested_mib=self.memory_requested_mib + pod.memory_request_mib,
            cpu_limits_millicores=self.cpu_limits_millicores + pod.cpu_limit_millicores,
            memory_limits_mib=self.memory_limits_mib + pod.memory_limit_mib,
            pods=self.pods + 1,
        )


@dataclass(frozen=True)
class Budget:
    """What a node may hold under a policy."""

    cpu_requests_millicores: int
    memory_requests_mib: int
    cpu_limits_millicores: int
    memory_limits_mib: int
    pods: int


@dataclass(frozen=True)
class ClusterState:
    id: uuid.UUID
    name: str
    policy: Policy
    nodes: tuple[Node, ...]
    cordoned: bool = False


@dataclass(frozen=True)
class Placed:
    cluster: ClusterState


@dataclass(frozen=True)
class Refused:
    reason: str


def _share(amount: int, factor: Decimal) -> int:
    return int((Decimal(amount) * factor).to_integral_value(ROUND_FLOOR))


def budget(node: Node, policy: Policy) -> Budget:
    kept = Decimal(100 - policy.headroom_percent) / 100
    return Budget(
        cpu_requests_millicores=_share(node.cpu_allocatable_millicores, kept),
        memory_requests_mib=_share(node.memory_allocatable_mib, kept),
        cpu_limits_millicores=_share(node.cpu_allocatable_millicores, policy.cpu_overcommit * kept),
        memory_limits_mib=_share(node.memory_allocatable_mib, policy.memory_overcommit * kept),
        pods=node.pods_allocatable,
    )


def room_for(node: Node, policy: Policy, pod: Pod) -> int:
    """How many more pods like `pod` the node can take (0 when it takes no placements)."""
    if node.refusal is not None:
        return 0
    most = budget(node, policy)
    pairs = (
        (most.cpu_requests_millicores - node.cpu_requested_millicores, pod.cpu_request_millicores),
        (most.memory_requests_mib - node.memory_requested_mib, pod.memory_request_mib),
        (most.cpu_limits_millicores - node.cpu_limits_millicores, pod.cpu_limit_millicores),
        (most.memory_limits_mib - node.memory_limits_mib, pod.memory_limit_mib),
        (most.pods - node.pods, 1),
    )
    return max(0, min(left // each for left, each in pairs))


def pack(pods: Sequence[Pod], nodes: Iterable[Node], policy: Policy) -> tuple[Node, ...] | None:
    """The nodes with `pods` put on them (first fit, largest memory limit first), or None when one does not fit."""
    packed = list(nodes)
    for pod in sorted(pods, key=lambda p: (p.memory_limit_mib, p.cpu_limit_millicores), reverse=True):
        for index, node in enumerate(packed):
            if room_for(node, policy, pod) >= 1:
                packed[index] = node.with_pod(pod)
                break
        else:
            return None
    return tuple(packed)


def memory_left(nodes: Iterable[Node], policy: Policy) -> int:
    """MiB of limits the nodes that take placements could still hold."""
    return sum(
        budget(node, policy).memory_limits_mib - node.memory_limits_mib for node in nodes if node.refusal is None
    )


def fits(cluster: ClusterState, pods: Sequence[Pod]) -> str | None:
    """None when `pods` (a new instance's) fit the account's cluster; "no capacity" otherwise. A cordoned cluster
    takes no new accounts but still takes its own accounts' instances (they cannot go elsewhere); a cordoned node
    takes no new pods."""
    return None if pack(pods, cluster.nodes, cluster.policy) is not None else NO_CAPACITY


def choose_cluster(clusters: Sequence[ClusterState], pods: Sequence[Pod]) -> Placed | Refused:
    """The cluster for a new account whose first instances are `pods`: among the clusters that are not cordoned
    and where they all fit, the one with the most memory left afterwards (then by name). Refused with the reason
    otherwise."""
    if not clusters:
        return Refused(f"{NO_CAPACITY}: no cluster is registered")
    open_clusters = [cluster for cluster in clusters if not cluster.cordoned]
    if not open_clusters:
        return Refused(f"{NO_CAPACITY}: every cluster is cordoned")
    candidates = []
    for cluster in open_clusters:
        packed = pack(pods, cluster.nodes, cluster.policy)
        if packed is not None:
            candidates.append((-memory_left(packed, cluster.policy), cluster.name, cluster))
    if not candidates:
        if not any(node.refusal is None for cluster in open_clusters for node in cluster.nodes):
            return Refused(f"{NO_CAPACITY}: no node takes placements (none observed Ready and uncordoned)")
        cpu = sum(pod.cpu_limit_millicores for pod in pods)
        memory = sum(pod.memory_limit_mib for pod in pods)
        return Refused(
            f"{NO_CAPACITY}: {len(pods)} pod(s) with limits of {cpu} millicores and {memory} MiB fit no cluster"
        )
    return Placed(min(candidates, key=lambda c: (c[0], c[1]))[2])


def capacity_in_pods(nodes: Iterable[Node], policy: Policy, pod: Pod = BURSTABLE_POD) -> dict[str, int]:
    """Per node, how many more pods like `pod` it can take: the planning figure."""
    return {node.name: room_for(node, policy, pod) for node in nodes}


def template_pods(template: TemplateSpec, tier: str) -> list[Pod]:
    """The pods an instance of `template` at `tier` runs: its own, and its database's when it has one."""
    shapes = [template.tiers[tier]] + ([template.database.resources] if template.database else [])
    return [
        Pod(shape.cpu_request_millicores, shape.memory_request_mib, shape.cpu_limit_millicores, shape.memory_limit_mib)
        for shape in shapes
    ]
