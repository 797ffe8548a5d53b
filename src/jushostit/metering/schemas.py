"""Usage, spend and budgets as the API shows them. Quantities are exact decimal strings (JSON numbers would
lose digits); money is integer minor units with its currency."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import Field

from jushostit.catalog.spec import Currency
from jushostit.kit.schemas import MinorUnits, RequestModel, ResponseModel

Granularity = Literal["hour", "day", "month"]
QUANTITIES = ("Exact decimal strings by metric: cpu_core_seconds, memory_byte_seconds, memory_peak_bytes, "
              "network_receive_bytes, network_transmit_bytes, storage_byte_seconds, cost (OpenCost, its currency), "
              "session_seconds")


class UsageBucketRead(ResponseModel):
    start: datetime
    end: datetime
    quantities: dict[str, str] = Field(description=QUANTITIES)
    instances: dict[str, dict[str, str]] = Field(description="The same per instance id (\"\": the account's own, "
                                                             "such as volumes measured per namespace)")
    cost_minor: int | None = Field(description="Usage charges of the day or month (owners and admins only; null "
                                               "by hour and for other members)")
    projects: dict[str, dict[str, str]] = Field(
        description="Seat holders' projects on a data platform, by the namespace each runs in: the part of their "
                    "seat's quantities each project made")


class UsageReport(ResponseModel):
    account_id: uuid.UUID
    granularity: Granularity
    start: datetime
    end: datetime
    currency: str | None = Field(description="The currency of cost_minor (owners and admins only)")
    totals: dict[str, str] = Field(description=QUANTITIES)
    cost_minor: int | None = Field(description="The charges of the whole range (owners and admins; null by hour)")
    buckets: list[UsageBucketRead]


class SpendRead(ResponseModel):
    account_id: uuid.UUID
    month: date = Field(description="The calendar month (UTC) the figures are for")
    quantities: dict[str, str] = Field(description=QUANTITIES)
    spent_minor: int = Field(description="Usage charges this month so far, computed from usage")
    forecast_minor: int = Field(description="The month's charges at its end if usage goes on at this month's rate")
    currency: str | None
    budget_minor: int | None
    budget_currency: str | None
    budget_percent: int | None = Field(description="spent_minor as a share of the budget: throttled from 100, "
                                                   "suspended from 120")


class BudgetUpdate(RequestModel):
    """The monthly budget on usage charges, in the account's currency; null removes it."""

    monthly_limit_minor: MinorUnits | None = Field(description="Minor units; null: no budget")
    currency: Currency | None = None


class BudgetRead(ResponseModel):
    account_id: uuid.UUID
    monthly_limit_minor: int | None
    currency: str | None


class CollectorRunRead(ResponseModel):
    id: uuid.UUID
    collector: str
    scope: str
    window_start: datetime
    window_end: datetime
    status: str
    started_at: datetime
    finished_at: datetime | None
    rows: int
    unmapped: int
    errors: list[str]


class CollectorHealth(ResponseModel):
    collector: str
    scope: str
    last_run: CollectorRunRead
    read_until: datetime | None = Field(description="The end of the last successful window: usage after it is "
                                                    "read by the next successful run")


class CollectorsRead(ResponseModel):
    items: list[CollectorHealth]


class CollectorRunPage(ResponseModel):
    items: list[CollectorRunRead]


class UnmappedRead(ResponseModel):
    source: str
    scope: str
    subject: str = Field(description="A namespace (and pod) or an instance no account owns: measured, never billed")
    samples: int
    first_seen: datetime
    last_seen: datetime


class UnmappedPage(ResponseModel):
    items: list[UnmappedRead]


class SpenderRead(ResponseModel):
    account_id: uuid.UUID
    account_name: str
    spent_minor: int
    currency: str | None


class AdminUsageRead(ResponseModel):
    month: date
    top_spenders: list[SpenderRead]


class MeterReportRead(ResponseModel):
    id: uuid.UUID
    account_id: uuid.UUID
    month: date
    identifier: str
    event_name: str
    value: int
    reported_before: int
    timestamp: datetime
    status: str
    attempts: int
    error: str | None
    created_at: datetime
    sent_at: datetime | None


class MeterReportPage(ResponseModel):
    items: list[MeterReportRead]


class SyncAccepted(ResponseModel):
    message: str
