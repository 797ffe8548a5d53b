"""Which cluster an account is on, with that cluster's settings and API, from the cluster registry.

A client per cluster, opened from its kubeconfig (decrypted once per cluster and process, never logged) and kept
for the life of the process: every pass of every account on that cluster shares its connections. An account's
placement never changes once made, so it is remembered once read.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from jushostit.clusters import kube
from jushostit.clusters import service as clusters
from jushostit.clusters.repository import ClusterRepository
from jushostit.kit.crypto import SecretBox
from jushostit.kit.db import Database
from jushostit.models import Cluster
from jushostit.runtime.kubernetes.cluster import ClusterSettings


def cluster_settings(cluster: Cluster) -> ClusterSettings:
    """What the manifests need of a registered cluster (the rest are K3s's defaults)."""
    return ClusterSettings(base_domain=cluster.base_domain, cert_issuer=cluster.cert_issuer,
                           ingress_class=cluster.ingress_class, ingress_namespace=cluster.ingress_namespace,
                           pod_cidr=cluster.pod_cidr, service_cidr=cluster.service_cidr)


@dataclass(frozen=True)
class Target:
    """A cluster we act on."""

    cluster_id: uuid.UUID
    name: str
    settings: ClusterSettings
    api: kube.ClusterApi


class ClusterDirectory:
    def __init__(self, database: Database, box: SecretBox, *, timeout: float) -> None:
        self._database = database
        self._box = box
        self._timeout = timeout
        self._targets: dict[uuid.UUID, Target] = {}
        self._placements: dict[uuid.UUID, uuid.UUID] = {}  # account → cluster
        self._opening = asyncio.Lock()  # one client per cluster, even when passes ask at once

    async def of_account(self, account_id: uuid.UUID) -> Target | None:
        """The account's cluster; None when it is not placed on one."""
        cluster_id = self._placements.get(account_id)
        if cluster_id is None:
            async with self._database.reader() as session:
                cluster_id = await ClusterRepository(session).placement_of(account_id)
            if cluster_id is None:
                return None
            self._placements[account_id] = cluster_id
        return await self._target(cluster_id)

    async def of_instance(self, instance_id: uuid.UUID) -> tuple[uuid.UUID, Target] | None:
        """(its account, its account's cluster); None when the instance or the placement does not exist."""
        async with self._database.reader() as session:
            found = await ClusterRepository(session).placement_of_instance(instance_id)
        if found is None:
            return None
        account_id, cluster_id = found
        target = await self._target(cluster_id)
        return None if target is None else (account_id, target)

    async def every_cluster(self) -> list[Target]:
        async with self._database.reader() as session:
            ids = await ClusterRepository(session).ids()
        targets = [await self._target(cluster_id) for cluster_id in ids]
        return [target for target in targets if target is not None]

    async def _target(self, cluster_id: uuid.UUID) -> Target | None:
        async with self._opening:
            if cluster_id not in self._targets:
                async with self._database.reader() as session:
                    cluster = await ClusterRepository(session).by_id(cluster_id)
                    if cluster is None:  # deleted meanwhile
                        return None
                    kubeconfig = await clusters.kubeconfig_of(session, self._box, cluster_id)
                api = kube.open_api(kubeconfig, timeout=self._timeout)
                self._targets[cluster_id] = Target(cluster_id, cluster.name, cluster_settings(cluster), api)
            return self._targets[cluster_id]

    async def close(self) -> None:
        for target in self._targets.values():
            await target.api.close()
        self._targets.clear()
