from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, BigInteger, Enum, ForeignKey, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime
from jushostit.models._columns import created_at_column, id_column


class AccountStatus(enum.StrEnum):
    pending = "pending"
    active = "active"
    past_due = "past_due"
    suspended = "suspended"
    cancelled = "cancelled"
    terminated = "terminated"


class BillingMode(enum.StrEnum):
    card = "card"
    invoice = "invoice"
    prepaid = "prepaid"
    free = "free"


class SuspensionReason(enum.StrEnum):
    billing = "billing"
    budget = "budget"
    admin = "admin"
    abuse = "abuse"
    contract = "contract"


class Role(enum.StrEnum):
    owner = "owner"
    admin = "admin"
    member = "member"


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    return Enum(cls, name=name, native_enum=False, length=32, validate_strings=True)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = id_column()
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[AccountStatus] = mapped_column(
        _enum(AccountStatus, "account_status"), default=AccountStatus.pending, nullable=False
    )
    billing_mode: Mapped[BillingMode] = mapped_column(
        _enum(BillingMode, "billing_mode"), default=BillingMode.free, nullable=False
    )
    billing_email: Mapped[str | None] = mapped_column(String(320))
    suspension_reasons: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list, nullable=False)
    past_due_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An admin's overrides of the billing mode's dunning policy: ISO 8601 durations by field (`grace`,
    # `reminders`, `terminate_after`; a null `terminate_after` means never). Absent fields take the default.
    dunning_policy: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The past-due episode (its `past_due_since`) dunning e-mails went out for, until its end is announced.
    dunning_episode: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The monthly budget on usage charges (metering): throttled at 100 %, suspended (`budget`) at 120 %.
    budget_minor: Mapped[int | None] = mapped_column(BigInteger)
    budget_currency: Mapped[str | None] = mapped_column(String(3))
    # The payment provider's customer (Stripe `cus_…`), created once per account.
    provider_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    # A prepaid contract: the won CRM deal (HubSpot) the account was signed up with, one deal one account, and
    # the instant it ends (the entitlement holds the account from then on, until an admin extends it).
    contract_ref: Mapped[str | None] = mapped_column(String(64), unique=True)
    contract_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = created_at_column()
    # The account's last failed reconcile pass (the full error is for platform admins only).
    reconcile_error: Mapped[str | None] = mapped_column(String(2000))
    reconcile_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reconcile_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0", nullable=False)


class Membership(Base):
    __tablename__ = "memberships"

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[Role] = mapped_column(_enum(Role, "account_role"), nullable=False)
    created_at: Mapped[datetime] = created_at_column()
