"""Kubernetes clusters we place accounts on, their observed nodes, which cluster each account is on, and the public
hosts taken in each cluster.

A cluster's kubeconfig is never a column here: it is a `StoredSecret` (owner_type `cluster`, name `kubeconfig`),
encrypted with the secret box and re-encrypted by `jushostit keys rotate`. Nodes are what the last observation
saw (the `clusters.observe` job rewrites them), except `cordoned`, which is ours: an admin's "no new placements".
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime, utcnow
from jushostit.models._columns import created_at_column, id_column


class Cluster(Base):
    __tablename__ = "clusters"
    __table_args__ = (
        CheckConstraint("cpu_overcommit >= 1 AND cpu_overcommit <= 10", name="cpu_overcommit_range"),
        CheckConstraint("memory_overcommit >= 1 AND memory_overcommit <= 10", name="memory_overcommit_range"),
        CheckConstraint("headroom_percent >= 0 AND headroom_percent <= 90", name="headroom_range"),
    )

    id: Mapped[uuid.UUID] = id_column()
    name: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    api_server: Mapped[str] = mapped_column(String(2048), nullable=False)  # from the kubeconfig; not a secret
    tls_verified: Mapped[bool] = mapped_column(Boolean, nullable=False)  # False: insecure-skip-tls-verify
    kubernetes_version: Mapped[str] = mapped_column(String(100), nullable=False)  # /version's gitVersion
    base_domain: Mapped[str] = mapped_column(String(253), nullable=False)
    ingress_class: Mapped[str] = mapped_column(String(253), nullable=False)
    cert_issuer: Mapped[str | None] = mapped_column(String(253))  # a cert-manager ClusterIssuer
    ingress_namespace: Mapped[str] = mapped_column(String(63), nullable=False)
    pod_cidr: Mapped[str] = mapped_column(String(43), nullable=False)
    service_cidr: Mapped[str] = mapped_column(String(43), nullable=False)
    # Capacity policy: the sum of limits may reach allocatable x overcommit, less the headroom kept free.
    cpu_overcommit: Mapped[Decimal] = mapped_column(Numeric(4, 2), nullable=False)
    memory_overcommit: Mapped[Decimal] = mapped_column(Numeric(4, 2), nullable=False)
    headroom_percent: Mapped[int] = mapped_column(Integer, nullable=False)
    cordoned: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    observed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the last observation that succeeded
    observe_error: Mapped[str | None] = mapped_column(String(500))  # why the last one failed; None when it did not
    created_at: Mapped[datetime] = created_at_column()


class ClusterNode(Base):
    """A node as the last observation saw it. CPU in millicores and memory in MiB, as the catalog's resources:
    allocatable rounded down, what pods ask for rounded up."""

    __tablename__ = "cluster_nodes"

    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(253), primary_key=True)
    cpu_capacity_millicores: Mapped[int] = mapped_column(BigInteger, nullable=False)
    memory_capacity_mib: Mapped[int] = mapped_column(BigInteger, nullable=False)
    cpu_allocatable_millicores: Mapped[int] = mapped_column(BigInteger, nullable=False)
    memory_allocatable_mib: Mapped[int] = mapped_column(BigInteger, nullable=False)
    pods_allocatable: Mapped[int] = mapped_column(Integer, nullable=False)
    # Sums over the pods placed on the node that have not finished (every namespace, ours or not).
    cpu_requested_millicores: Mapped[int] = mapped_column(BigInteger, nullable=False)
    memory_requested_mib: Mapped[int] = mapped_column(BigInteger, nullable=False)
    cpu_limits_millicores: Mapped[int] = mapped_column(BigInteger, nullable=False)
    memory_limits_mib: Mapped[int] = mapped_column(BigInteger, nullable=False)
    pods: Mapped[int] = mapped_column(Integer, nullable=False)
    conditions: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)  # type → "True" | "False" | "Unknown"
    unschedulable: Mapped[bool] = mapped_column(Boolean, nullable=False)  # spec.unschedulable (kubectl cordon)
    no_schedule_taints: Mapped[list[Any]] = mapped_column(JSONB, nullable=False)  # keys of NoSchedule/NoExecute taints
    cordoned: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)  # ours: no new placements
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class AccountPlacement(Base):
    """The cluster an account is on: chosen once, when it is first placed; its instances stay there. A cluster
    with accounts placed on it cannot be deleted (RESTRICT)."""

    __tablename__ = "account_placements"

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    cluster_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clusters.id", ondelete="RESTRICT"), index=True, nullable=False
    )
    placed_at: Mapped[datetime] = created_at_column()


class ClusterHost(Base):
    """A public host taken in a cluster by an instance: two instances of one cluster never share a host (its
    ingress controller would route both to whichever it saw first)."""

    __tablename__ = "cluster_hosts"
    __table_args__ = (
        UniqueConstraint("cluster_id", "host", name="uq_cluster_hosts_cluster_host"),
        CheckConstraint("host = lower(host)", name="host_lower_case"),
    )

    id: Mapped[uuid.UUID] = id_column()
    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), nullable=False)
    host: Mapped[str] = mapped_column(String(253), nullable=False)  # lower case, no trailing dot
    instance_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), index=True, nullable=False
    )
    created_at: Mapped[datetime] = created_at_column()
