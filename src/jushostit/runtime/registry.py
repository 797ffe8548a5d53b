"""Which runtime driver this process uses (`JUSHOSTIT_RUNTIME`), and the address an instance is reached at: the
runtime says where it serves an instance, never the caller."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.clusters.repository import ClusterRepository
from jushostit.config import Settings
from jushostit.kit.crypto import SecretBox
from jushostit.kit.db import Database
from jushostit.runtime.kubernetes.cluster import ClusterSettings
from jushostit.runtime.kubernetes.directory import ClusterDirectory, cluster_settings
from jushostit.runtime.kubernetes.driver import KubernetesDriver
from jushostit.runtime.local.browsers import BrowserPools, WithPools
from jushostit.runtime.local.driver import LocalDriver
from jushostit.runtime.protocol import RuntimeDriver
from jushostit.runtime.seats import SeatDriver, WithSeats

KUBERNETES = "kubernetes"
# One Kubernetes driver per process and database: it keeps a client per cluster. It holds the database and the
# box, so their ids stay theirs while the entry lives.
_kubernetes_drivers: dict[tuple[int, int, int], KubernetesDriver] = {}


@cache
def _local(root: Path) -> LocalDriver:
    return LocalDriver(root)


def local_driver(settings: Settings) -> LocalDriver:
    """The local runtime of this data dir (one per process: it tracks the children it started)."""
    return _local(settings.data_dir.resolve() / "instances")


@cache
def _pools(root: Path) -> BrowserPools:
    return BrowserPools(root)


def browser_pools(settings: Settings) -> BrowserPools:
    """The local runtime's browser pools of this data dir (one per process: the browsers are its children)."""
    return _pools(settings.data_dir.resolve() / "browsers")


def kubernetes_driver(database: Database, box: SecretBox, *, timeout: int) -> KubernetesDriver:
    key = (id(database), id(box), timeout)
    if key not in _kubernetes_drivers:
        _kubernetes_drivers[key] = KubernetesDriver(ClusterDirectory(database, box, timeout=timeout))
    return _kubernetes_drivers[key]


def driver_for(settings: Settings, database: Database, box: SecretBox) -> RuntimeDriver:
    """The workload runtime, with the seat driver beside it for seats on shared data platforms."""
    runtime: RuntimeDriver
    if settings.runtime == KUBERNETES:
        runtime = kubernetes_driver(database, box, timeout=settings.kubernetes_timeout_seconds)
    else:
        runtime = WithPools(local_driver(settings), browser_pools(settings))
    return WithSeats(runtime, SeatDriver(database, box, timeout=settings.platform_timeout_seconds))


async def shutdown(settings: Settings) -> None:
    """At the end of `serve` or `worker`: the local runtime stops the processes it ran (the next start brings them
    back); the Kubernetes runtime closes its clients (its instances live on their cluster)."""
    if settings.runtime == KUBERNETES:
        for driver in _kubernetes_drivers.values():
            await driver.close()
        _kubernetes_drivers.clear()
    else:
        await browser_pools(settings).shutdown()
        await local_driver(settings).shutdown()


@dataclass(frozen=True)
class Addresses:
    """Where the instances of some accounts are reached: `http://<slug>.localhost:<port>/` through the local
    router, or the Ingress host `<slug>.<base domain>` of the account's cluster. An account not placed on a cluster
    (its instances ordered before the runtime was switched) has no address: its instances are failed."""

    port: int
    clusters: Mapping[uuid.UUID, ClusterSettings] | None  # None: the local runtime

    def of(self, account_id: uuid.UUID, slug: str) -> tuple[str, str]:
        """(url, host)."""
        if self.clusters is None:
            host = f"{slug}.localhost"
            return f"http://{host}:{self.port}/", host
        cluster = self.clusters.get(account_id)
        return cluster.instance_address(slug) if cluster is not None else ("", "")


async def addresses(session: AsyncSession, settings: Settings, account_ids: Sequence[uuid.UUID]) -> Addresses:
    """The local runtime asks nothing of the database; the Kubernetes one reads the accounts' clusters at once."""
    if settings.runtime != KUBERNETES:
        return Addresses(settings.port, None)
    clusters = await ClusterRepository(session).clusters_of(account_ids)
    return Addresses(settings.port, {account_id: cluster_settings(c) for account_id, c in clusters.items()})
