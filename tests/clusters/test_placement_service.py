"""Placing accounts and taking public hosts on the real database: an account is placed once and stays in its
cluster, what fits nowhere is refused with the reason, an instance that does not fit its account's cluster is
"no capacity", and a public host is taken by one instance per cluster."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import select

from jushostit.clusters import service
from jushostit.clusters.observation import NodeSummary
from jushostit.clusters.placement import BURSTABLE_POD, NO_CAPACITY, Pod
from jushostit.kit.db import utcnow
from jushostit.kit.errors import Conflict
from jushostit.models import AuditEntry, Cluster, Instance


async def a_cluster(session, name: str, *, memory_mib: int = 30_000, cordoned: bool = False) -> Cluster:
    cluster = Cluster(
        name=f"{name}-{uuid.uuid4().hex[:6]}", api_server="https://10.0.0.5:6443", tls_verified=True,
        kubernetes_version="v1.31.4+k3s1", base_domain="apps.example.com", ingress_class="traefik",
        ingress_namespace="kube-system", pod_cidr="10.42.0.0/16", service_cidr="10.43.0.0/16",
        cpu_overcommit=Decimal(3), memory_overcommit=Decimal(1), headroom_percent=30, cordoned=cordoned,
    )
    session.add(cluster)
    await session.flush()
    node = NodeSummary("worker-1", 16_000, memory_mib, 15_000, memory_mib, 110, 0, 0, 0, 0, 0, {"Ready": "True"})
    await service.record_nodes(session, cluster_id=cluster.id, nodes=[node], now=utcnow())
    return cluster


@pytest.fixture(autouse=True)
async def no_other_clusters(session) -> None:
    """Placement chooses among every cluster: this test's are the only ones (rolled back afterwards)."""
    for cluster in (await session.scalars(select(Cluster))).all():
        await session.delete(cluster)
    await session.flush()


async def test_an_account_is_placed_once_and_stays_in_its_cluster(session, signup) -> None:
    owner = await signup()
    account_id = uuid.UUID(owner.account_id)
    small = await a_cluster(session, "small", memory_mib=8_000)
    placed = await service.place_account(session, account_id=account_id, pods=[BURSTABLE_POD])
    assert placed == small.id
    # A roomier cluster arrives: the account stays where it is.
    await a_cluster(session, "large", memory_mib=64_000)
    assert await service.place_account(session, account_id=account_id, pods=[BURSTABLE_POD]) == small.id
    entries = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "account.placed",
                                                              AuditEntry.account_id == account_id))).all()
    assert [entry.after["cluster_id"] for entry in entries] == [str(small.id)]


async def test_a_new_account_goes_to_the_roomiest_open_cluster(session, signup) -> None:
    owner = await signup()
    await a_cluster(session, "small", memory_mib=8_000)
    large = await a_cluster(session, "large", memory_mib=64_000)
    await a_cluster(session, "closed", memory_mib=128_000, cordoned=True)
    assert await service.place_account(session, account_id=uuid.UUID(owner.account_id), pods=[BURSTABLE_POD]) == large.id


async def test_an_account_that_fits_nowhere_is_refused_with_the_reason_and_is_not_placed(session, signup) -> None:
    owner = await signup()
    with pytest.raises(Conflict) as refused:
        await service.place_account(session, account_id=uuid.UUID(owner.account_id), pods=[BURSTABLE_POD])
    assert refused.value.code == "no_capacity"
    assert refused.value.details == {"reason": f"{NO_CAPACITY}: no cluster is registered"}
    await a_cluster(session, "tiny", memory_mib=1_024)
    with pytest.raises(Conflict, match="fit no cluster"):
        await service.place_account(session, account_id=uuid.UUID(owner.account_id), pods=[BURSTABLE_POD] * 2)


async def test_an_instance_that_does_not_fit_its_accounts_cluster_is_no_capacity(session, signup) -> None:
    owner = await signup()
    account_id = uuid.UUID(owner.account_id)
    assert await service.admission(session, account_id=account_id, pods=[BURSTABLE_POD]) == NO_CAPACITY  # not placed
    await a_cluster(session, "home", memory_mib=4_096)  # 2,867 MiB of limits at 30% headroom
    await service.place_account(session, account_id=account_id, pods=[BURSTABLE_POD])
    assert await service.admission(session, account_id=account_id, pods=[BURSTABLE_POD, BURSTABLE_POD]) is None
    big = Pod(cpu_request_millicores=500, memory_request_mib=1_024, cpu_limit_millicores=2_000, memory_limit_mib=4_096)
    assert await service.admission(session, account_id=account_id, pods=[big]) == NO_CAPACITY


async def an_instance(session, account_id: str, name: str) -> uuid.UUID:
    instance = Instance(account_id=uuid.UUID(account_id), template_code="static-site", name=name,
                        slug=f"{name}-{uuid.uuid4().hex[:6]}", tier="small")
    session.add(instance)
    await session.flush()
    return instance.id


async def test_a_public_host_is_taken_by_one_instance_per_cluster(session, signup) -> None:
    owner = await signup()
    one, other = await a_cluster(session, "one"), await a_cluster(session, "other")
    first = await an_instance(session, owner.account_id, "blog")
    second = await an_instance(session, owner.account_id, "shop")
    await service.claim_host(session, cluster_id=one.id, host="Blog.Example.com.", instance_id=first)
    await service.claim_host(session, cluster_id=one.id, host="blog.example.com", instance_id=first)  # again: fine
    with pytest.raises(Conflict) as taken:
        await service.claim_host(session, cluster_id=one.id, host="BLOG.example.com", instance_id=second)
    assert (taken.value.code, taken.value.details) == ("host_taken", {"host": "blog.example.com"})
    await service.claim_host(session, cluster_id=other.id, host="blog.example.com", instance_id=second)
    # Released with its instance, the host can be taken again.
    await service.release_hosts(session, instance_id=first)
    await service.claim_host(session, cluster_id=one.id, host="blog.example.com", instance_id=second)
