"""What a node holds, read from the API's Node and Pod objects (decoded by lightkube from the stand-in's wire
format): allocatable, conditions, taints, and the pods placed on it as the scheduler counts them."""

from __future__ import annotations

from jushostit.clusters.kube import connect
from jushostit.clusters.kubeconfig import accept_kubeconfig
from jushostit.clusters.observation import summarise
from tests.clusters.conftest import kubeconfig_for
from tests.clusters.kube_stand_in import GIB_KI, k3s_node, k8s_container, pod


async def observed(kube_server):
    async with connect(accept_kubeconfig(kubeconfig_for(kube_server)), timeout=5) as api:
        return {summary.name: summary for summary in summarise(await api.nodes(), await api.pods())}


async def test_a_node_reports_its_allocatable_conditions_and_the_requests_and_limits_placed_on_it(
    kube, kube_server
) -> None:
    kube.nodes = [
        k3s_node("ryzen-3900x", cpu="24", memory_ki=64 * GIB_KI, allocatable_cpu="22500m",
                 allocatable_memory_ki=61_128 * 1024),
        k3s_node("ryzen-6900hs", cpu="16", memory_ki=32 * GIB_KI, ready="False", pressure=("MemoryPressure",),
                 unschedulable=True, taints=(("node.kubernetes.io/not-ready", "NoExecute"), ("gpu", "PreferNoSchedule"))),
    ]
    kube.pods = [
        # CoreDNS as K3s ships it: requests, and a memory limit only.
        pod("coredns-1", "kube-system", "ryzen-3900x",
            [k8s_container("coredns", {"cpu": "100m", "memory": "70Mi"}, {"memory": "170Mi"})]),
        # Two containers, an init container larger than either, and a runtime class's overhead.
        pod("app-1", "jh-acme", "ryzen-3900x",
            [k8s_container("app", {"cpu": "250m", "memory": "512Mi"}, {"cpu": "1", "memory": "1Gi"}),
             k8s_container("sidecar", {"cpu": "50m", "memory": "64Mi"}, {"cpu": "100m", "memory": "128Mi"})],
            init=[k8s_container("migrate", {"cpu": "500m", "memory": "256Mi"}, {"cpu": "2", "memory": "256Mi"})],
            overhead={"cpu": "10m", "memory": "1Mi"}),
        pod("done-1", "jh-acme", "ryzen-3900x", [k8s_container("job", {"cpu": "4", "memory": "8Gi"})], phase="Succeeded"),
        pod("failed-1", "jh-acme", "ryzen-3900x", [k8s_container("job", {"cpu": "4", "memory": "8Gi"})], phase="Failed"),
        pod("pending-1", "jh-acme", None, [k8s_container("app", {"cpu": "4", "memory": "8Gi"})], phase="Pending"),
    ]
    nodes = await observed(kube_server)

    big = nodes["ryzen-3900x"]
    assert (big.cpu_capacity_millicores, big.memory_capacity_mib) == (24_000, 65_536)
    assert (big.cpu_allocatable_millicores, big.memory_allocatable_mib, big.pods_allocatable) == (22_500, 61_128, 110)
    # CPU requests: 100 + max(250 + 50, 500) + 10; memory: 70 + (512 + 64) + 1 MiB.
    assert (big.cpu_requested_millicores, big.memory_requested_mib) == (610, 647)
    # Limits: CoreDNS's CPU counts its request (no limit); the init container's 2 CPU beat the two containers'.
    assert (big.cpu_limits_millicores, big.memory_limits_mib) == (100 + 2_000 + 10, 170 + 1_024 + 128 + 1)
    assert big.pods == 2
    assert big.ready and big.pressure == () and not big.unschedulable and big.no_schedule_taints == ()

    small = nodes["ryzen-6900hs"]
    assert not small.ready
    assert small.pressure == ("MemoryPressure",)
    assert small.unschedulable
    assert small.no_schedule_taints == ("node.kubernetes.io/not-ready",)
    assert small.pods == 0 and small.conditions["Ready"] == "False"
