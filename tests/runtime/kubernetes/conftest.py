"""Fixtures of the Kubernetes runtime's tests: the live app, and a cluster stand-in that keeps what is applied to
it (tests/clusters/kube_workloads.py), registered and committed with an account placed on it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import delete

from jushostit.clusters import service as clusters
from jushostit.clusters.repository import ClusterRepository
from jushostit.clusters.schemas import ClusterCreate
from jushostit.container import Container
from jushostit.models import Account, Instance
from jushostit.reconcile.desired import InstanceInput
from jushostit.runtime.kubernetes.directory import ClusterDirectory
from jushostit.runtime.kubernetes.driver import KubernetesDriver
from tests.clusters.conftest import kubeconfig_for
from tests.clusters.kube_stand_in import KubeServer, kube_server
from tests.clusters.kube_workloads import WorkloadStandIn
from tests.live import live

__all__ = ["kube_server", "live"]

BASE_DOMAIN = "apps.example.net"


@pytest.fixture
def cluster_api(kube_server: KubeServer) -> WorkloadStandIn:
    """The stand-in, fresh for each test: it keeps what is applied to it; its workloads roll out on `settle()`."""
    kube_server.stand_in = WorkloadStandIn()
    return kube_server.stand_in


@dataclass
class Placed:
    account_id: uuid.UUID
    cluster_id: uuid.UUID
    driver: KubernetesDriver
    api: WorkloadStandIn
    container: Container

    @property
    def namespace(self) -> str:
        return f"jushostit-{self.account_id}"

    async def record(self, *instances: InstanceInput) -> None:
        """The instances' rows (logs and restart find an instance's account by it), committed."""
        async with self.container.database.unit_of_work() as session:
            for instance in instances:
                session.add(Instance(id=instance.id, account_id=self.account_id, template_code=instance.template_code,
                                     name=instance.name, slug=instance.slug, tier=instance.tier))


@pytest.fixture
async def placed(container: Container, kube_server: KubeServer, cluster_api: WorkloadStandIn
                 ) -> AsyncIterator[Placed]:
    """A cluster registered against the stand-in and an account placed on it, committed (both deleted
    afterwards), and a Kubernetes driver reading them as `serve` would. The registration's requests are
    forgotten: the test sees the driver's only."""
    data = ClusterCreate(name=f"driver-{uuid.uuid4().hex[:6]}", kubeconfig=kubeconfig_for(kube_server),
                         base_domain=BASE_DOMAIN)
    async with container.database.unit_of_work() as session:
        cluster = await clusters.register(session, container.secret_box, data=data, timeout=5)
        account = Account(name="Driver Co")
        session.add(account)
        await session.flush()
        await ClusterRepository(session).place(account.id, cluster.id)
    driver = KubernetesDriver(ClusterDirectory(container.database, container.secret_box, timeout=5))
    cluster_api.forget_requests()
    try:
        yield Placed(account.id, cluster.id, driver, cluster_api, container)
    finally:
        await driver.close()
        async with container.database.unit_of_work() as session:
            await session.execute(delete(Account).where(Account.id == account.id))
            await clusters.delete(session, cluster_id=cluster.id)
