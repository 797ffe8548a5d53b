"""Placement, the pure decision: the planning figure of the three-node K3s fleet, what overcommit and headroom
change, which nodes take placements, and how a cluster is chosen or refused.

The fleet (one K3s cluster):

| node | CPU | RAM installed | capacity (kubelet) | reserved | allocatable |
|---|---|---|---|---|---|
| Ryzen 9 3900X, control plane + worker | 12c/24t | 64 GiB | 24 CPU, 64,300 MiB | 1.5 CPU, 3,172 MiB | 22.5 CPU, 61,128 MiB |
| Ryzen 9 6900HS | 8c/16t | 32 GiB | 16 CPU, 31,400 MiB | 1 CPU, 1,636 MiB | 15 CPU, 29,764 MiB |
| Core i7-11700 | 8c/16t | 32 GiB | 16 CPU, 31,900 MiB | 1 CPU, 1,636 MiB | 15 CPU, 30,264 MiB |

Assumed: the kubelet's memory capacity is MemTotal, below the RAM installed (firmware and kernel keep about 1.2 GiB
of 64 GiB and 0.9 GiB of 32 GiB; the 6900HS's integrated GPU takes 512 MiB more). Reserved is what K3s is told to
keep for itself and the OS (`--kube-reserved`, `--system-reserved`, plus the 100 MiB eviction threshold): on the
server 1 CPU + 2 GiB for K3s (API server, scheduler, controllers, its datastore) and 0.5 CPU + 1 GiB for the OS; on
agents 0.5 CPU + 512 MiB for K3s and 0.5 CPU + 1 GiB for the OS. K3s's own pods run on the server: CoreDNS (requests
100m/70Mi, memory limit 170Mi), metrics-server (100m/70Mi, no limits), Traefik, the local-path provisioner and one
service load balancer per node (no requests).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from decimal import Decimal

import pytest

from jushostit.catalog import loader
from jushostit.clusters.placement import (
    BURSTABLE_POD,
    NO_CAPACITY,
    ClusterState,
    Node,
    Placed,
    Pod,
    Policy,
    Refused,
    capacity_in_pods,
    choose_cluster,
    fits,
    pack,
    room_for,
    template_pods,
)

DEFAULT_POLICY = Policy(cpu_overcommit=Decimal(3), memory_overcommit=Decimal(1), headroom_percent=30)

RYZEN_3900X = Node(
    "ryzen-3900x", cpu_allocatable_millicores=22_500, memory_allocatable_mib=61_128, pods_allocatable=110,
    # K3s's own pods: CoreDNS and metrics-server count their requests, and a pod without a limit its request.
    cpu_requested_millicores=200, memory_requested_mib=140, cpu_limits_millicores=200, memory_limits_mib=240, pods=5,
)
RYZEN_6900HS = Node("ryzen-6900hs", cpu_allocatable_millicores=15_000, memory_allocatable_mib=29_764,
                    pods_allocatable=110, pods=1)
CORE_I7 = Node("core-i7", cpu_allocatable_millicores=15_000, memory_allocatable_mib=30_264, pods_allocatable=110, pods=1)
FLEET = (RYZEN_3900X, RYZEN_6900HS, CORE_I7)


def policy(cpu: str, memory: str, headroom: int) -> Policy:
    return Policy(Decimal(cpu), Decimal(memory), headroom)


# (CPU overcommit, memory overcommit, headroom %) → customer pods per node at 0.25/512Mi requested, 1/1Gi limits.
FLEET_TABLE = [
    pytest.param(policy("3", "1", 30), (41, 20, 20), 81, id="default: 3:1 CPU, no memory overcommit, 30% headroom"),
    pytest.param(policy("3", "1", 35), (38, 18, 19), 75, id="35% headroom"),
    pytest.param(policy("3", "1", 40), (35, 17, 17), 69, id="40% headroom"),
    pytest.param(policy("3", "1", 0), (59, 29, 29), 117, id="no headroom: every MiB promised"),
    pytest.param(policy("1", "1", 30), (15, 10, 10), 35, id="no CPU overcommit: CPU limits bind"),
    pytest.param(policy("4", "1", 30), (41, 20, 20), 81, id="4:1 CPU changes nothing while memory binds"),
    pytest.param(policy("3", "1.5", 30), (47, 30, 31), 108, id="memory 1.5:1: CPU limits bind on the 3900X"),
    pytest.param(policy("4", "2", 30), (62, 40, 41), 143, id="4:1 and 2:1: the scheduler's requests bind"),
]


@pytest.mark.parametrize(("rule", "per_node", "total"), FLEET_TABLE)
def test_the_three_node_k3s_fleet_holds_the_planned_number_of_customer_pods(rule, per_node, total) -> None:
    capacity = capacity_in_pods(FLEET, rule)
    assert tuple(capacity.values()) == per_node
    assert sum(capacity.values()) == total


def test_the_default_policy_reproduces_the_planning_figure_of_76_to_82_pods() -> None:
    assert 76 <= sum(capacity_in_pods(FLEET, DEFAULT_POLICY).values()) <= 82


def test_packing_the_planned_number_of_pods_succeeds_and_one_more_is_no_capacity() -> None:
    planned = sum(capacity_in_pods(FLEET, DEFAULT_POLICY).values())
    cluster = ClusterState(uuid.uuid4(), "k3s", DEFAULT_POLICY, FLEET)
    assert fits(cluster, [BURSTABLE_POD] * planned) is None
    assert fits(cluster, [BURSTABLE_POD] * (planned + 1)) == NO_CAPACITY


def test_the_pod_count_of_a_node_is_a_hard_limit() -> None:
    node = Node("small-pods", cpu_allocatable_millicores=64_000, memory_allocatable_mib=256_000, pods_allocatable=110,
                pods=108)
    assert room_for(node, DEFAULT_POLICY, BURSTABLE_POD) == 2


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ready": False}, "not Ready"),
        ({"cordoned": True}, "cordoned"),
        ({"unschedulable": True}, "unschedulable (cordoned in Kubernetes)"),
        ({"pressure": ("MemoryPressure",)}, "under MemoryPressure"),
        ({"no_schedule_taints": ("node-role.kubernetes.io/control-plane",)},
         "tainted NoSchedule: node-role.kubernetes.io/control-plane"),
    ],
)
def test_a_node_that_is_not_ready_cordoned_pressed_or_tainted_takes_no_placements(change, reason) -> None:
    node = replace(RYZEN_6900HS, **change)
    assert node.refusal == reason
    assert room_for(node, DEFAULT_POLICY, BURSTABLE_POD) == 0
    assert pack([BURSTABLE_POD], [node], DEFAULT_POLICY) is None


def test_a_pod_never_spans_nodes_even_when_the_sum_would_hold_it() -> None:
    halves = (Node("a", 2_000, 1_500, 110), Node("b", 2_000, 1_500, 110))
    no_headroom = policy("1", "1", 0)
    big = Pod(cpu_request_millicores=500, memory_request_mib=2_000, cpu_limit_millicores=1_000, memory_limit_mib=2_000)
    assert pack([big], halves, no_headroom) is None
    assert pack([BURSTABLE_POD, BURSTABLE_POD], halves, no_headroom) is not None


def cluster(name: str, *nodes: Node, cordoned: bool = False, rule: Policy = DEFAULT_POLICY) -> ClusterState:
    return ClusterState(uuid.uuid4(), name, rule, nodes, cordoned)


def test_a_new_account_goes_where_it_fits_with_the_most_memory_left() -> None:
    small = cluster("small", Node("s1", 4_000, 4_096, 110))
    large = cluster("large", Node("l1", 16_000, 32_768, 110))
    full = cluster("full", Node("f1", 16_000, 65_536, 110, memory_limits_mib=65_536))
    decision = choose_cluster([small, full, large], [BURSTABLE_POD])
    assert isinstance(decision, Placed) and decision.cluster is large
    # Two clusters alike: the name decides, so the same facts give the same answer.
    twin = cluster("a-twin", Node("t1", 16_000, 32_768, 110))
    decision = choose_cluster([large, twin], [BURSTABLE_POD])
    assert isinstance(decision, Placed) and decision.cluster is twin


def test_a_cordoned_cluster_takes_no_new_account_but_still_takes_its_own_accounts_instances() -> None:
    cordoned = cluster("cordoned", Node("c1", 16_000, 32_768, 110), cordoned=True)
    assert choose_cluster([cordoned], [BURSTABLE_POD]) == Refused(f"{NO_CAPACITY}: every cluster is cordoned")
    assert fits(cordoned, [BURSTABLE_POD]) is None


@pytest.mark.parametrize(
    ("clusters", "reason"),
    [
        ([], f"{NO_CAPACITY}: no cluster is registered"),
        ([cluster("empty")], f"{NO_CAPACITY}: no node takes placements (none observed Ready and uncordoned)"),
        ([cluster("down", Node("d1", 16_000, 32_768, 110, ready=False))],
         f"{NO_CAPACITY}: no node takes placements (none observed Ready and uncordoned)"),
        ([cluster("tiny", Node("t1", 1_000, 1_024, 110))],
         f"{NO_CAPACITY}: 2 pod(s) with limits of 2000 millicores and 2048 MiB fit no cluster"),
    ],
    ids=["no cluster", "no node observed", "no node ready", "too small"],
)
def test_a_new_account_that_fits_nowhere_is_refused_with_the_reason(clusters, reason) -> None:
    assert choose_cluster(clusters, [BURSTABLE_POD, BURSTABLE_POD]) == Refused(reason)


def test_an_instance_is_the_pods_of_its_tier_and_of_its_database() -> None:
    n8n = next(spec for spec in loader.load_templates() if spec.code == "n8n")
    assert template_pods(n8n, "small") == [Pod(250, 320, 1000, 1024), Pod(100, 256, 500, 512)]
    site = next(spec for spec in loader.load_templates() if spec.code == "static-site")
    assert len(template_pods(site, site.default_tier)) == 1
