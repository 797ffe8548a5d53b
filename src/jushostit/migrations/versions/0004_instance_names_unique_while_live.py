"""instance names unique among live instances only

A deleted instance (deleted_at set, kept for history) no longer holds its name: the customer may order a new
instance with the same name, as `InstanceRepository.name_taken` already promised (it was a 500 before).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint('uq_instances_account_name', 'instances', type_='unique')
    op.create_index('uq_instances_account_name', 'instances', ['account_id', 'name'], unique=True,
                    postgresql_where=sa.text('deleted_at IS NULL'))


def downgrade() -> None:
    op.drop_index('uq_instances_account_name', table_name='instances')
    op.create_unique_constraint('uq_instances_account_name', 'instances', ['account_id', 'name'])
