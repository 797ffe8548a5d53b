"""Kubernetes clusters, their observed nodes, the cluster each account is on, public hosts per cluster

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-29

A cluster's kubeconfig is a stored secret (owner_type `cluster`), never a column. A cluster with accounts placed
on it cannot be deleted (account_placements.cluster_id is RESTRICT); a host is unique per cluster.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("api_server", sa.String(length=2048), nullable=False),
        sa.Column("tls_verified", sa.Boolean(), nullable=False),
        sa.Column("kubernetes_version", sa.String(length=100), nullable=False),
        sa.Column("base_domain", sa.String(length=253), nullable=False),
        sa.Column("ingress_class", sa.String(length=253), nullable=False),
        sa.Column("cert_issuer", sa.String(length=253), nullable=True),
        sa.Column("ingress_namespace", sa.String(length=63), nullable=False),
        sa.Column("pod_cidr", sa.String(length=43), nullable=False),
        sa.Column("service_cidr", sa.String(length=43), nullable=False),
        sa.Column("cpu_overcommit", sa.Numeric(4, 2), nullable=False),
        sa.Column("memory_overcommit", sa.Numeric(4, 2), nullable=False),
        sa.Column("headroom_percent", sa.Integer(), nullable=False),
        sa.Column("cordoned", sa.Boolean(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("observe_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("cpu_overcommit >= 1 AND cpu_overcommit <= 10", name=op.f("ck_clusters_cpu_overcommit_range")),
        sa.CheckConstraint(
            "memory_overcommit >= 1 AND memory_overcommit <= 10", name=op.f("ck_clusters_memory_overcommit_range")
        ),
        sa.CheckConstraint("headroom_percent >= 0 AND headroom_percent <= 90", name=op.f("ck_clusters_headroom_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clusters")),
        sa.UniqueConstraint("name", name=op.f("uq_clusters_name")),
    )
    op.create_table(
        "cluster_nodes",
        sa.Column("cluster_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("cpu_capacity_millicores", sa.BigInteger(), nullable=False),
        sa.Column("memory_capacity_mib", sa.BigInteger(), nullable=False),
        sa.Column("cpu_allocatable_millicores", sa.BigInteger(), nullable=False),
        sa.Column("memory_allocatable_mib", sa.BigInteger(), nullable=False),
        sa.Column("pods_allocatable", sa.Integer(), nullable=False),
        sa.Column("cpu_requested_millicores", sa.BigInteger(), nullable=False),
        sa.Column("memory_requested_mib", sa.BigInteger(), nullable=False),
        sa.Column("cpu_limits_millicores", sa.BigInteger(), nullable=False),
        sa.Column("memory_limits_mib", sa.BigInteger(), nullable=False),
        sa.Column("pods", sa.Integer(), nullable=False),
        sa.Column("conditions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("unschedulable", sa.Boolean(), nullable=False),
        sa.Column("no_schedule_taints", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("cordoned", sa.Boolean(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"], ["clusters.id"], name=op.f("fk_cluster_nodes_cluster_id_clusters"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("cluster_id", "name", name=op.f("pk_cluster_nodes")),
    )
    op.create_table(
        "account_placements",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("cluster_id", sa.Uuid(), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_account_placements_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["cluster_id"], ["clusters.id"], name=op.f("fk_account_placements_cluster_id_clusters"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_placements")),
    )
    op.create_index(op.f("ix_account_placements_cluster_id"), "account_placements", ["cluster_id"])
    op.create_table(
        "cluster_hosts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("cluster_id", sa.Uuid(), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("instance_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("host = lower(host)", name=op.f("ck_cluster_hosts_host_lower_case")),
        sa.ForeignKeyConstraint(
            ["cluster_id"], ["clusters.id"], name=op.f("fk_cluster_hosts_cluster_id_clusters"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"], ["instances.id"], name=op.f("fk_cluster_hosts_instance_id_instances"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_hosts")),
        sa.UniqueConstraint("cluster_id", "host", name=op.f("uq_cluster_hosts_cluster_host")),
    )
    op.create_index(op.f("ix_cluster_hosts_instance_id"), "cluster_hosts", ["instance_id"])


def downgrade() -> None:
    op.drop_table("cluster_hosts")
    op.drop_table("account_placements")
    op.drop_table("cluster_nodes")
    op.drop_table("clusters")
