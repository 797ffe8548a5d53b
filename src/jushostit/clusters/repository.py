"""Every query of clusters, their nodes, account placements and the public host registry."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.models import AccountPlacement, Cluster, ClusterHost, ClusterNode, Instance


class ClusterRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def name_taken(self, name: str) -> bool:
        return bool(await self.session.scalar(select(func.count()).where(Cluster.name == name)))

    async def add(self, values: dict[str, Any]) -> Cluster | None:
        """A new cluster, or None when its name is taken (by a concurrent registration too)."""
        cluster_id = await self.session.scalar(
            insert(Cluster).values(**values).on_conflict_do_nothing(index_elements=[Cluster.name]).returning(Cluster.id)
        )
        return None if cluster_id is None else await self.session.get(Cluster, cluster_id)

    async def all(self) -> list[Cluster]:
        return list((await self.session.scalars(select(Cluster).order_by(Cluster.name))).all())

    async def ids(self) -> list[uuid.UUID]:
        return list((await self.session.scalars(select(Cluster.id).order_by(Cluster.name))).all())

    async def by_name(self, name: str) -> Cluster | None:
        return await self.session.scalar(select(Cluster).where(Cluster.name == name))

    async def by_id(self, cluster_id: uuid.UUID, *, for_update: bool = False) -> Cluster | None:
        stmt = select(Cluster).where(Cluster.id == cluster_id)
        if for_update:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return await self.session.scalar(stmt)

    async def nodes(self, cluster_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[ClusterNode]]:
        found: dict[uuid.UUID, list[ClusterNode]] = {cluster_id: [] for cluster_id in cluster_ids}
        rows = await self.session.scalars(
            select(ClusterNode).where(ClusterNode.cluster_id.in_(cluster_ids)).order_by(ClusterNode.name)
        )
        for node in rows:
            found[node.cluster_id].append(node)
        return found

    async def node(self, cluster_id: uuid.UUID, name: str) -> ClusterNode | None:
        return await self.session.scalar(
            select(ClusterNode).where(ClusterNode.cluster_id == cluster_id, ClusterNode.name == name).with_for_update()
        )

    async def store_nodes(self, cluster_id: uuid.UUID, nodes: Sequence[dict[str, Any]], now: datetime) -> None:
        """The nodes as observed now: each upserted (an admin's `cordoned` kept), those gone deleted."""
        for values in nodes:
            observed = {**values, "observed_at": now}
            await self.session.execute(
                insert(ClusterNode).values(cluster_id=cluster_id, cordoned=False, **observed)
                .on_conflict_do_update(index_elements=[ClusterNode.cluster_id, ClusterNode.name], set_=observed)
            )
        await self.session.execute(
            delete(ClusterNode).where(
                ClusterNode.cluster_id == cluster_id, ClusterNode.name.not_in([values["name"] for values in nodes])
            )
        )

    async def placed_accounts(self, cluster_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        rows = await self.session.execute(
            select(AccountPlacement.cluster_id, func.count())
            .where(AccountPlacement.cluster_id.in_(cluster_ids))
            .group_by(AccountPlacement.cluster_id)
        )
        return {cluster_id: int(count) for cluster_id, count in rows}

    async def placement_of(self, account_id: uuid.UUID) -> uuid.UUID | None:
        return await self.session.scalar(
            select(AccountPlacement.cluster_id).where(AccountPlacement.account_id == account_id)
        )

    async def clusters_of(self, account_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Cluster]:
        """The cluster of each account placed on one, in one query (accounts not placed are absent)."""
        if not account_ids:
            return {}
        rows = await self.session.execute(
            select(AccountPlacement.account_id, Cluster)
            .join(Cluster, Cluster.id == AccountPlacement.cluster_id)
            .where(AccountPlacement.account_id.in_(account_ids))
        )
        return {account_id: cluster for account_id, cluster in rows.tuples()}

    async def placement_of_instance(self, instance_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID] | None:
        """(account, cluster) of an instance whose account is placed; None otherwise."""
        row = (await self.session.execute(
            select(Instance.account_id, AccountPlacement.cluster_id)
            .join(AccountPlacement, AccountPlacement.account_id == Instance.account_id)
            .where(Instance.id == instance_id)
        )).first()
        return None if row is None else (row[0], row[1])

    async def place(self, account_id: uuid.UUID, cluster_id: uuid.UUID) -> bool:
        """Record the account's cluster; False when it already had one."""
        placed = await self.session.scalar(
            insert(AccountPlacement).values(account_id=account_id, cluster_id=cluster_id)
            .on_conflict_do_nothing(index_elements=[AccountPlacement.account_id])
            .returning(AccountPlacement.account_id)
        )
        return placed is not None

    async def claim_host(self, cluster_id: uuid.UUID, host: str, instance_id: uuid.UUID) -> uuid.UUID:
        """Take `host` in the cluster for the instance; the instance that holds it (another one when taken)."""
        claimed: uuid.UUID | None = await self.session.scalar(
            insert(ClusterHost).values(cluster_id=cluster_id, host=host, instance_id=instance_id)
            .on_conflict_do_nothing(index_elements=[ClusterHost.cluster_id, ClusterHost.host])
            .returning(ClusterHost.instance_id)
        )
        if claimed is not None:
            return claimed
        holder = await self.session.scalar(
            select(ClusterHost.instance_id).where(ClusterHost.cluster_id == cluster_id, ClusterHost.host == host)
        )
        assert holder is not None  # hosts are released only with their instance
        return holder

    async def release_hosts(self, instance_id: uuid.UUID) -> None:
        await self.session.execute(delete(ClusterHost).where(ClusterHost.instance_id == instance_id))

    async def delete(self, cluster: Cluster) -> None:
        await self.session.delete(cluster)
        await self.session.flush()
