"""What a cluster's nodes hold, from its API's Node and Pod objects. Pure: objects in, one summary per node out.

A pod counts on the node it is bound to (`spec.nodeName`) until it has finished (phase Succeeded or Failed), in
every namespace: the scheduler counts them all. Its requests are Kubernetes' effective ones: the larger of the
sum over its containers and the largest init container, plus the pod's overhead. Its limits likewise; a container
without a limit counts its request (it can use more, but no budget can say how much).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from lightkube.models.core_v1 import Container
from lightkube.resources.core_v1 import Node, Pod
from lightkube.utils.quantity import parse_quantity

from jushostit.clusters.placement import PRESSURE_CONDITIONS

MIB = Decimal(1024 * 1024)
FINISHED_PHASES = ("Succeeded", "Failed")
NO_SCHEDULE_EFFECTS = ("NoSchedule", "NoExecute")


@dataclass
class Usage:
    """Millicores and bytes, as exact decimals until they are stored."""

    cpu_requests: Decimal = Decimal(0)
    memory_requests: Decimal = Decimal(0)
    cpu_limits: Decimal = Decimal(0)
    memory_limits: Decimal = Decimal(0)
    pods: int = 0

    def add(self, other: Usage) -> None:
        self.cpu_requests += other.cpu_requests
        self.memory_requests += other.memory_requests
        self.cpu_limits += other.cpu_limits
        self.memory_limits += other.memory_limits
        self.pods += other.pods


@dataclass(frozen=True)
class NodeSummary:
    name: str
    cpu_capacity_millicores: int
    memory_capacity_mib: int
    cpu_allocatable_millicores: int
    memory_allocatable_mib: int
    pods_allocatable: int
    cpu_requested_millicores: int
    memory_requested_mib: int
    cpu_limits_millicores: int
    memory_limits_mib: int
    pods: int
    conditions: dict[str, str] = field(default_factory=dict)
    unschedulable: bool = False
    no_schedule_taints: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return is_ready(self.conditions)

    @property
    def pressure(self) -> tuple[str, ...]:
        return pressures(self.conditions)


def is_ready(conditions: Mapping[str, str]) -> bool:
    return conditions.get("Ready") == "True"


def pressures(conditions: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(name for name in PRESSURE_CONDITIONS if conditions.get(name) == "True")


def _quantity(values: Mapping[str, str] | None, name: str) -> Decimal:
    found = parse_quantity((values or {}).get(name))
    return found if found is not None else Decimal(0)


def _millicores(cores: Decimal) -> Decimal:
    return cores * 1000


def _container_usage(container: Container) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    resources = container.resources
    requests = resources.requests if resources else None
    limits = resources.limits if resources else None
    cpu_request, memory_request = _quantity(requests, "cpu"), _quantity(requests, "memory")
    cpu_limit = _quantity(limits, "cpu") if limits and "cpu" in limits else cpu_request
    memory_limit = _quantity(limits, "memory") if limits and "memory" in limits else memory_request
    return _millicores(cpu_request), memory_request, _millicores(cpu_limit), memory_limit


def pod_usage(pod: Pod) -> Usage:
    spec = pod.spec
    assert spec is not None
    app = [_container_usage(container) for container in spec.containers]
    init = [_container_usage(container) for container in spec.initContainers or []]
    overhead_cpu, overhead_memory = _millicores(_quantity(spec.overhead, "cpu")), _quantity(spec.overhead, "memory")
    effective = [
        max(sum((each[column] for each in app), Decimal(0)), max((each[column] for each in init), default=Decimal(0)))
        for column in range(4)
    ]
    return Usage(
        cpu_requests=effective[0] + overhead_cpu, memory_requests=effective[1] + overhead_memory,
        cpu_limits=effective[2] + overhead_cpu, memory_limits=effective[3] + overhead_memory, pods=1,
    )


def _placed_on(pod: Pod) -> str | None:
    if pod.spec is None or not pod.spec.nodeName:
        return None
    if pod.status is not None and pod.status.phase in FINISHED_PHASES:
        return None
    return pod.spec.nodeName


def summarise(nodes: Iterable[Node], pods: Iterable[Pod]) -> list[NodeSummary]:
    usage: dict[str, Usage] = {}
    for pod in pods:
        node_name = _placed_on(pod)
        if node_name is not None:
            usage.setdefault(node_name, Usage()).add(pod_usage(pod))
    summaries = []
    for node in nodes:
        assert node.metadata is not None and node.metadata.name is not None
        status, spec = node.status, node.spec
        capacity = status.capacity if status else None
        allocatable = status.allocatable if status else None
        used = usage.get(node.metadata.name, Usage())
        taints = (spec.taints or []) if spec else []
        summaries.append(NodeSummary(
            name=node.metadata.name,
            cpu_capacity_millicores=math.floor(_millicores(_quantity(capacity, "cpu"))),
            memory_capacity_mib=math.floor(_quantity(capacity, "memory") / MIB),
            cpu_allocatable_millicores=math.floor(_millicores(_quantity(allocatable, "cpu"))),
            memory_allocatable_mib=math.floor(_quantity(allocatable, "memory") / MIB),
            pods_allocatable=math.floor(_quantity(allocatable, "pods")),
            cpu_requested_millicores=math.ceil(used.cpu_requests),
            memory_requested_mib=math.ceil(used.memory_requests / MIB),
            cpu_limits_millicores=math.ceil(used.cpu_limits),
            memory_limits_mib=math.ceil(used.memory_limits / MIB),
            pods=used.pods,
            conditions={c.type: c.status for c in (status.conditions or [])} if status else {},
            unschedulable=bool(spec and spec.unschedulable),
            no_schedule_taints=tuple(t.key for t in taints if t.effect in NO_SCHEDULE_EFFECTS),
        ))
    return summaries
