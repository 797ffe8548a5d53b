"""seats on shared data platforms: the platform user each seat instance holds, its holder's projects, and the
cluster a platform runs its projects on

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("platforms", sa.Column("cluster_id", sa.Uuid(), sa.ForeignKey("clusters.id", ondelete="SET NULL"),
                                         nullable=True))
    op.create_index("ix_platforms_cluster_id", "platforms", ["cluster_id"])
    op.add_column("platforms", sa.Column("oidc_provider", sa.String(64), nullable=True))
    op.create_table(
        "seats",
        sa.Column("instance_id", sa.Uuid(), sa.ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("platform_id", sa.Uuid(), sa.ForeignKey("platforms.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("user_id", sa.Uuid(), sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("remote_subject", sa.String(255), nullable=True),
        sa.Column("platform_user_id", sa.Integer(), nullable=True),
        sa.Column("create_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_seats_platform_id", "seats", ["platform_id"])
    op.create_index("ix_seats_user_id", "seats", ["user_id"])
    op.create_index("uq_seats_platform_email", "seats", ["platform_id", sa.text("lower(email)")], unique=True,
                    postgresql_where=sa.text("removed_at IS NULL"))
    op.create_table(
        "seat_projects",
        sa.Column("instance_id", sa.Uuid(), sa.ForeignKey("seats.instance_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("project_id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
    )
    op.create_index("ix_seat_projects_namespace", "seat_projects", ["namespace"])


def downgrade() -> None:
    op.drop_table("seat_projects")
    op.drop_table("seats")
    op.drop_index("ix_platforms_cluster_id", table_name="platforms")
    op.drop_column("platforms", "oidc_provider")
    op.drop_column("platforms", "cluster_id")
