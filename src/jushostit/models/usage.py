"""Metering's tables: each collector run, the raw samples (kept a while), the daily sums per account, the budget
alerts sent, what was reported to Stripe, and the counters the local runtime reads differences of."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime
from jushostit.models._columns import created_at_column, id_column


class MeteringRun(Base):
    """One run of one collector over one window, for admins (collector health) and for the next run, which
    starts where the last successful one ended."""

    __tablename__ = "metering_runs"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="metering_run_status"),
        Index("ix_metering_runs_latest", "collector", "scope", "status", "window_end"),
    )

    id: Mapped[uuid.UUID] = id_column()
    collector: Mapped[str] = mapped_column(String(32), nullable=False)  # local | prometheus | opencost
    scope: Mapped[str] = mapped_column(String(64), nullable=False)  # "local", or the cluster's id
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="running")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    unmapped: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # What was skipped (a NaN, a negative value), or why the run failed; a few hundred characters each at most.
    errors: Mapped[list[str]] = mapped_column(JSONB, nullable=False, default=list)


class UsageSample(Base):
    """One quantity of one metric over one window. Unique on (source, source_id): a window read twice is stored
    once. Written first, marked aggregated second, in the transaction that updated usage_daily from it, so a
    crash in between leaves it to the next aggregation, never lost (the reverse of OpenMeter's #5118)."""

    __tablename__ = "usage_samples"
    __table_args__ = (
        UniqueConstraint("source", "source_id", name="uq_usage_samples_source_id"),
        Index("ix_usage_samples_account_window", "account_id", "window_start"),
        Index("ix_usage_samples_unaggregated", "id", postgresql_where="aggregated_at IS NULL"),
        Index("ix_usage_samples_recorded_at", "recorded_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    source_id: Mapped[str] = mapped_column(String(400), nullable=False)
    scope: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    # Who it belongs to; null when no account owns the subject (listed for admins, never billed).
    account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    instance_id: Mapped[uuid.UUID | None] = mapped_column()
    subject: Mapped[str] = mapped_column(String(300), nullable=False)
    # A seat holder's project on a data platform (its namespace), when the subject is one.
    project: Mapped[str | None] = mapped_column(String(255))
    metric: Mapped[str] = mapped_column(String(32), nullable=False)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    quantity: Mapped[Decimal] = mapped_column(Numeric, nullable=False)
    recorded_at: Mapped[datetime] = created_at_column()
    aggregated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UsageDaily(Base):
    """An account's usage of one day: the quantities (decimal strings by metric), the same per instance, the
    sources they came from, and what the day added to the month's charge. Rewritten from the day's samples,
    never added to."""

    __tablename__ = "usage_daily"

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    sources: Mapped[list[str]] = mapped_column(ARRAY(String(32)), nullable=False)
    quantities: Mapped[dict[str, str]] = mapped_column(JSONB, nullable=False)
    breakdown: Mapped[dict[str, dict[str, str]]] = mapped_column(JSONB, nullable=False)  # instance id → quantities
    # Seat holders' projects on a data platform: project namespace → quantities (part of their seat's breakdown).
    project_breakdown: Mapped[dict[str, dict[str, str]]] = mapped_column(JSONB, nullable=False,
                                                                         server_default=text("'{}'::jsonb"))
    cost_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    currency: Mapped[str | None] = mapped_column(String(3))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class BudgetAlert(Base):
    """A budget threshold (50, 75, 90, 100 %) announced for a month: once each."""

    __tablename__ = "budget_alerts"

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    threshold: Mapped[int] = mapped_column(Integer, primary_key=True)
    spent_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    limit_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sent_at: Mapped[datetime] = created_at_column()


class MeterReport(Base):
    """One Stripe billing meter event: recorded as `pending` before it is sent, `sent` once Stripe took it. Its
    identifier is deterministic (account, month, and the total reported before it), so a retry sends the same
    event; `value` is the difference between the month's charge and what was reported before it."""

    __tablename__ = "meter_reports"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sent', 'unknown')", name="meter_report_status"),
        CheckConstraint("value > 0", name="meter_report_positive"),
        UniqueConstraint("account_id", "month", "reported_before", name="uq_meter_reports_sequence"),
    )

    id: Mapped[uuid.UUID] = id_column()
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False)
    month: Mapped[date] = mapped_column(Date, nullable=False)
    identifier: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    event_name: Mapped[str] = mapped_column(String(100), nullable=False)
    customer: Mapped[str] = mapped_column(String(255), nullable=False)
    reported_before: Mapped[int] = mapped_column(BigInteger, nullable=False)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)  # the event's time, sent to Stripe
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = created_at_column()
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MeterCounter(Base):
    """The last reading of a cumulative counter (a process's CPU seconds, the router's bytes), so the next reading
    stores the difference. `identity` names what counts (a process and its start time, a router's boot): a new
    identity, or a value below the last, is a counter that started again from zero."""

    __tablename__ = "meter_counters"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    identity: Mapped[str] = mapped_column(String(100), nullable=False)
    value: Mapped[Decimal] = mapped_column(Numeric, nullable=False)
    read_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

