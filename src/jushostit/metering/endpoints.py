from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Response, status

from jushostit import container
from jushostit.auth.dependencies import AccountAccess, PlatformAdmin, require_account
from jushostit.auth.scopes import Scope
from jushostit.billing.periods import month_of, next_month
from jushostit.kit import jobs
from jushostit.kit.db import SessionDep, utcnow
from jushostit.kit.errors import responses
from jushostit.kit.schemas import DateTime
from jushostit.metering import service
from jushostit.metering.repository import MeteringRepository
from jushostit.metering.schemas import (
    AdminUsageRead,
    BudgetRead,
    BudgetUpdate,
    CollectorHealth,
    CollectorRunPage,
    CollectorRunRead,
    CollectorsRead,
    Granularity,
    MeterReportPage,
    MeterReportRead,
    SpenderRead,
    SpendRead,
    SyncAccepted,
    UnmappedPage,
    UnmappedRead,
    UsageBucketRead,
    UsageReport,
)
from jushostit.models import Role

router = APIRouter(prefix="/v1", tags=["usage"])

# Every member sees the account's usage; its money (charges, budget, forecast) is for owners and admins.
UsageReader = Annotated[AccountAccess, Depends(require_account(Scope.account_read))]
SpendReader = Annotated[AccountAccess, Depends(require_account(Scope.billing_read, Role.admin))]
BudgetWriter = Annotated[AccountAccess, Depends(require_account(Scope.billing_write, Role.admin))]

CSV_COLUMNS = ("start", "end", "instance", "metric", "quantity")
CSV_CONTENT = {"text/csv": {"schema": {"type": "string"},
                            "example": "start,end,instance,metric,quantity\n"
                                       "2026-11-29T00:00:00+00:00,2026-11-30T00:00:00+00:00,,cpu_core_seconds,12.5\n"}}


@router.get(
    "/accounts/{account_id}/usage", response_model=UsageReport,
    responses={**responses(401, 403, 404, 409, 422), 200: {"content": CSV_CONTENT}},
)
async def read_usage(
    access: UsageReader,
    session: SessionDep,
    start: Annotated[DateTime, Query(alias="from", description="Start of the range (RFC 3339)")],
    end: Annotated[DateTime, Query(alias="to", description="End of the range, excluded (RFC 3339)")],
    granularity: Annotated[Granularity, Query()] = "day",
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> UsageReport | Response:
    """The account's usage in [from, to) by hour (kept JUSHOSTIT_USAGE_RETENTION_DAYS), day or month: totals and
    per instance. Owners and admins also see the charges. `Accept: text/csv` answers one row per bucket,
    instance and metric."""
    settings, now = container.current().settings, utcnow()
    service.check_range(start, end, granularity, retention_days=settings.usage_retention_days, now=now)
    buckets = await service.usage_buckets(session, access.account.id, start=start, end=end, granularity=granularity)
    if accept and "text/csv" in accept:
        return usage_csv(buckets)
    money = access.can_see_billing
    totals: dict[str, Decimal] = {}
    for bucket in buckets:
        service.add_quantities(totals, bucket.quantities)
    priced = granularity != "hour" and money
    currency = await service.account_currency(session, access.account, now) if money else None
    return UsageReport(
        account_id=access.account.id, granularity=granularity, start=start, end=end, currency=currency,
        totals=service.decimal_strings(totals), cost_minor=sum(b.cost_minor or 0 for b in buckets) if priced else None,
        buckets=[UsageBucketRead(start=b.start, end=b.end, quantities=service.decimal_strings(b.quantities),
                                 instances={i: service.decimal_strings(q) for i, q in sorted(b.per_instance.items())},
                                 cost_minor=b.cost_minor if priced else None,
                                 projects={p: service.decimal_strings(q) for p, q in sorted(b.per_project.items())})
                 for b in buckets],
    )


def usage_csv(buckets: list[service.UsageBucket]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for bucket in buckets:
        for instance, metrics in sorted(bucket.per_instance.items()):
            for metric, quantity in sorted(metrics.items()):
                writer.writerow((bucket.start.isoformat(), bucket.end.isoformat(), instance, metric, str(quantity)))
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="usage.csv"'})


@router.get("/accounts/{account_id}/spend", response_model=SpendRead, responses=responses(401, 403, 404))
async def read_spend(access: SpendReader, session: SessionDep) -> SpendRead:
    """This month's usage charges so far, computed from usage, the forecast for the month's end, and the budget."""
    account = access.account
    month = await service.month_to_date(session, container.current().settings, account.id, utcnow())
    return SpendRead(
        account_id=account.id, month=month.month, quantities=service.decimal_strings(month.quantities), spent_minor=month.spent_minor,
        forecast_minor=month.forecast_minor, currency=month.currency, budget_minor=account.budget_minor,
        budget_currency=account.budget_currency,
        budget_percent=service.budget_percent(month.spent_minor, account.budget_minor),
    )


@router.put("/accounts/{account_id}/budget", response_model=BudgetRead, responses=responses(400, 401, 403, 404, 422))
async def set_budget(access: BudgetWriter, session: SessionDep, body: BudgetUpdate) -> BudgetRead:
    """Set (or with null, remove) the monthly budget on usage charges, in the account's currency. At 50, 75, 90
    and 100 % an e-mail goes to the billing address, once a month each; at 100 % services are throttled, at
    120 % suspended (reason `budget`), until the budget is raised or the month ends."""
    account = await service.set_budget(session, account=access.account, limit_minor=body.monthly_limit_minor,
                                       currency=body.currency, now=utcnow())
    return BudgetRead(account_id=account.id, monthly_limit_minor=account.budget_minor,
                      currency=account.budget_currency)


# --- platform admins ------------------------------------------------------------------------------------------


@router.get("/admin/usage", response_model=AdminUsageRead, tags=["admin"], responses=responses(401, 403, 422))
async def admin_usage(
    _: PlatformAdmin, session: SessionDep,
    month: Annotated[str | None, Query(pattern=r"^2[0-9]{3}-(0[1-9]|1[0-2])$", max_length=7,
                                       description="The month, YYYY-MM (default: this month)")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> AdminUsageRead:
    """Usage charges across accounts for a calendar month (UTC): the top spenders first."""
    first = date(int(month[:4]), int(month[5:]), 1) if month else month_of(utcnow())
    spenders = await MeteringRepository(session).top_spenders(first, next_month(first), limit)
    return AdminUsageRead(month=first, top_spenders=[
        SpenderRead(account_id=a, account_name=n, spent_minor=s, currency=c) for a, n, s, c in spenders])


@router.get("/admin/metering/collectors", response_model=CollectorsRead, tags=["admin"], responses=responses(401, 403))
async def collector_health(_: PlatformAdmin, session: SessionDep) -> CollectorsRead:
    """Each collector and scope: its last run (failed ones with their error) and how far usage has been read."""
    return CollectorsRead(items=[
        CollectorHealth(collector=run.collector, scope=run.scope, last_run=CollectorRunRead.model_validate(run),
                        read_until=read_until)
        for run, read_until in await MeteringRepository(session).collector_health()
    ])


@router.get("/admin/metering/runs", response_model=CollectorRunPage, tags=["admin"],
            responses=responses(401, 403, 422))
async def collector_runs(
    _: PlatformAdmin, session: SessionDep,
    collector: Annotated[str | None, Query(max_length=32)] = None,
    before: Annotated[DateTime | None, Query(description="Runs started before this instant (paging)")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> CollectorRunPage:
    """Collector runs, newest first: window, rows stored, unmapped subjects, what was skipped or failed."""
    runs = await MeteringRepository(session).runs(collector=collector, limit=limit, before=before)
    return CollectorRunPage(items=[CollectorRunRead.model_validate(r) for r in runs])


@router.get("/admin/metering/unmapped", response_model=UnmappedPage, tags=["admin"], responses=responses(401, 403, 422))
async def unmapped_subjects(
    _: PlatformAdmin, session: SessionDep,
    days: Annotated[int, Query(ge=1, le=35, description="Seen in the last this many days")] = 7,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> UnmappedPage:
    """Namespaces, pods and instances whose usage no account owns: measured, never billed."""
    rows = await MeteringRepository(session).unmapped(utcnow() - timedelta(days=days), limit)
    return UnmappedPage(items=[UnmappedRead(source=s, scope=sc, subject=su, samples=n, first_seen=f, last_seen=la)
                               for s, sc, su, n, f, la in rows])


@router.get("/admin/metering/stripe-reports", response_model=MeterReportPage, tags=["admin"],
            responses=responses(401, 403, 422))
async def stripe_reports(
    _: PlatformAdmin, session: SessionDep,
    status_: Annotated[Literal["pending", "sent", "unknown"] | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> MeterReportPage:
    """Billing meter events sent to Stripe (or pending, or unconfirmed past Stripe's 24-hour deduplication)."""
    reports = await MeteringRepository(session).reports(limit, status=status_)
    return MeterReportPage(items=[MeterReportRead.model_validate(r) for r in reports])


@router.post("/admin/metering/stripe-sync", response_model=SyncAccepted, status_code=status.HTTP_202_ACCEPTED,
             tags=["admin"], responses=responses(401, 403))
async def stripe_sync_now(_: PlatformAdmin) -> SyncAccepted:
    """Report card accounts' usage to Stripe now rather than at the daily run (a job: its events appear under
    stripe-reports)."""
    jobs.enqueue("metering.report_to_stripe", queueing_lock="metering.report_to_stripe")
    return SyncAccepted(message="The usage report to Stripe is queued")
