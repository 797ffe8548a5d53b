"""accounts.contract_ref and contract_ends_at: the prepaid contract an account was signed up with

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30

A corporate sign-up names a won CRM deal (HubSpot): its id is kept as `contract_ref`, unique, so one deal makes
one account, and the contract's end as `contract_ends_at`, which the entitlement enforces (a `contract` hold
from that instant). Both null for every other account.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("contract_ref", sa.String(length=64), nullable=True))
    op.add_column("accounts", sa.Column("contract_ends_at", sa.DateTime(timezone=True), nullable=True))
    op.create_unique_constraint(op.f("uq_accounts_contract_ref"), "accounts", ["contract_ref"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_accounts_contract_ref"), "accounts", type_="unique")
    op.drop_column("accounts", "contract_ends_at")
    op.drop_column("accounts", "contract_ref")
