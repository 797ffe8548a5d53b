"""Metering's decisions and writes: which window a collector reads next, whose usage a reading is, the daily
sums and their prices, the month's spend and forecast, budgets and their alerts. Never commits: the caller's
unit of work does.

The month is the calendar month in UTC: budgets, alerts and the usage charge reset on the 1st.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit
from jushostit.billing.periods import as_instant, month_of, next_month
from jushostit.billing.repository import BillingRepository
from jushostit.catalog.spec import UsagePricing
from jushostit.config import Settings
from jushostit.kit import context, money
from jushostit.kit.errors import Conflict, Unprocessable
from jushostit.metering import pricing
from jushostit.metering.readings import PEAK_METRICS, Collected, Metric, Reading
from jushostit.metering.repository import MeteringRepository, PricingRow
from jushostit.models import Account, MeteringRun, UsageDaily
from jushostit.notifications.service import queue_email
from jushostit.triggers import request_reconcile

log = structlog.get_logger(__name__)

BUDGET_ALERT_THRESHOLDS = (50, 75, 90, 100)
MAX_RUN_ERRORS = 50  # warnings kept per run (the rest are counted)
# Our namespaces are named after the account (runtime.kubernetes.manifests.namespace_name).
NAMESPACE_PATTERN = re.compile(r"^jushostit-(?P<account>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")


# --- windows ------------------------------------------------------------------------------------------------


def aligned(moment: datetime, step_seconds: int) -> datetime:
    """The latest multiple of the step at or before `moment` (whole seconds since the epoch)."""
    seconds = int(moment.timestamp())
    return datetime.fromtimestamp(seconds - seconds % step_seconds, tz=UTC)


def next_window(last_end: datetime | None, now: datetime, *, step_seconds: int, lag_seconds: int = 0,
                max_catch_up: timedelta = timedelta(days=35)) -> tuple[datetime, datetime] | None:
    """The window a collector reads next: from the end of the last successful run (no gap, no overlap) over the
    whole steps that fit before `now - lag` (a source needs a moment to have a window's last sample). A first
    run reads one step, ending on the interval's grid. A catch-up longer than the raw samples' retention is cut
    to it. None: nothing new yet."""
    limit, step = now - timedelta(seconds=lag_seconds), timedelta(seconds=step_seconds)
    if last_end is None:
        end = aligned(limit, step_seconds)
        return end - step, end
    # Whole steps from where the last run ended, even if the interval changed since (its end need not fall on
    # the new interval's grid): every window the same length, none read twice.
    steps = (limit - last_end) // step
    if steps < 1:
        return None
    end = last_end + steps * step
    return max(last_end, end - (max_catch_up // step) * step), end


# --- recording a collection -----------------------------------------------------------------------------------


@dataclass
class Owners:
    """Whose each subject is: accounts by id, instances by slug, for one collection."""

    accounts: set[uuid.UUID] = field(default_factory=set)
    slugs: dict[uuid.UUID, dict[str, uuid.UUID]] = field(default_factory=dict)
    # Namespaces a data platform on the readings' cluster runs its seat holders' projects in → (account, seat).
    seat_projects: dict[str, tuple[uuid.UUID, uuid.UUID]] = field(default_factory=dict)


def namespace_account(namespace: str) -> uuid.UUID | None:
    match = NAMESPACE_PATTERN.match(namespace)
    return uuid.UUID(match.group("account")) if match else None


def pod_instance(pod: str, slugs: dict[str, uuid.UUID]) -> uuid.UUID | None:
    """Our pods are named after their instance's slug (`<slug>-<hash>-<hash>`, `<slug>-db-0`): the longest slug
    the name starts with, then a dash."""
    best: tuple[int, uuid.UUID] | None = None
    for slug, instance_id in slugs.items():
        if pod.startswith(slug + "-") and (best is None or len(slug) > best[0]):
            best = (len(slug), instance_id)
    return best[1] if best else None


def owner_of(reading: Reading, owners: Owners) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    """(account, instance) of a reading; (None, None) when no account owns it: never billed."""
    subject = reading.subject
    if subject.namespace is None:
        account_id = subject.account_id
        return (account_id, subject.instance_id) if account_id in owners.accounts else (None, None)
    if subject.namespace in owners.seat_projects:
        return owners.seat_projects[subject.namespace]
    account_id = namespace_account(subject.namespace)
    if account_id is None or account_id not in owners.accounts:
        return None, None
    instance_id = pod_instance(subject.pod, owners.slugs.get(account_id, {})) if subject.pod else None
    return account_id, instance_id


async def subject_owners(session: AsyncSession, readings: Sequence[Reading], scope: str) -> Owners:
    """Which accounts of the readings exist (and, for a cluster's readings, are placed on that cluster), and which
    of the cluster's other namespaces are seat holders' projects on a data platform running there."""
    repository = MeteringRepository(session)
    local = {r.subject.account_id for r in readings if r.subject.namespace is None and r.subject.account_id}
    named = {a for r in readings if r.subject.namespace and (a := namespace_account(r.subject.namespace))}
    accounts = await repository.existing_accounts(local)
    others = {r.subject.namespace for r in readings if r.subject.namespace and not namespace_account(r.subject.namespace)}
    seat_projects = {}
    if _is_uuid(scope):
        if named:
            accounts |= await repository.accounts_on_cluster(uuid.UUID(scope), named)
        if others:
            seat_projects = await repository.seat_projects_on_cluster(uuid.UUID(scope), others)
    return Owners(accounts, await repository.instance_slugs(a for a in accounts if a in named), seat_projects)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def record_collection(
    session: AsyncSession, *, collector: str, scope: str, window: tuple[datetime, datetime], collected: Collected,
    started_at: datetime, now: datetime,
) -> MeteringRun:
    """Store a collection's readings (each once), and the run that read them, in one transaction."""
    owners = await subject_owners(session, collected.readings, scope)
    rows, unmapped = [], 0
    for reading in collected.readings:
        account_id, instance_id = owner_of(reading, owners)
        unmapped += account_id is None
        rows.append({
            "source": reading.source, "source_id": reading.source_id, "scope": reading.scope,
            "account_id": account_id, "instance_id": instance_id, "subject": reading.subject.label[:300],
            "project": reading.subject.namespace if reading.subject.namespace in owners.seat_projects else None,
            "metric": reading.metric.value, "window_start": reading.start, "window_end": reading.end,
            "quantity": reading.quantity, "recorded_at": now,
        })
    repository = MeteringRepository(session)
    stored = await repository.insert_samples(rows)
    warnings = collected.warnings
    errors = [w[:300] for w in warnings[:MAX_RUN_ERRORS]]
    if len(warnings) > MAX_RUN_ERRORS:
        errors.append(f"and {len(warnings) - MAX_RUN_ERRORS} more")
    run = MeteringRun(collector=collector, scope=scope, window_start=window[0], window_end=window[1],
                      status="succeeded", started_at=started_at, finished_at=now, rows=stored, unmapped=unmapped,
                      errors=errors)
    await repository.add(run)
    for warning in warnings[:MAX_RUN_ERRORS]:
        log.warning("metering.reading_skipped", collector=collector, scope=scope, why=warning[:300])
    return run


async def record_failure(session: AsyncSession, *, collector: str, scope: str, window: tuple[datetime, datetime],
                         error: str, started_at: datetime, now: datetime) -> MeteringRun:
    """A run that read nothing: its window stays unread (the next successful run starts where the last
    successful one ended), so an outage is a gap filled later, never a zero."""
    run = MeteringRun(collector=collector, scope=scope, window_start=window[0], window_end=window[1],
                      status="failed", started_at=started_at, finished_at=now, rows=0, unmapped=0,
                      errors=[error[:300]])
    await MeteringRepository(session).add(run)
    return run


# --- aggregation --------------------------------------------------------------------------------------------


def decimal_strings(values: dict[str, Decimal]) -> dict[str, str]:
    """Quantities as JSON keeps them: exact decimal strings, in a stable order."""
    return {key: str(value) for key, value in sorted(values.items())}


def add_quantities(into: dict[str, Decimal], more: dict[str, Decimal]) -> None:
    """Totals add up; a peak is the largest seen. Across instances an account's peak is so the largest
    instance's: they may not peak together, so no sum of peaks (a moment that may never have been)."""
    for metric, value in more.items():
        into[metric] = max(into.get(metric, Decimal(0)), value) if metric in PEAK_METRICS else \
            into.get(metric, Decimal(0)) + value


def usage_pricing(row: PricingRow | None) -> UsagePricing | None:
    return UsagePricing.model_validate(row.usage_pricing) if row and row.usage_pricing else None


def month_costs(days: Sequence[tuple[date, dict[str, Decimal]]], row: PricingRow | None, *,
                opencost_currency: str) -> list[int]:
    """Each day's share of its month's charge, the days of one month given in order with their quantities."""
    if row is None:
        return [0] * len(days)
    plan_pricing, charges = usage_pricing(row), []
    cumulative: dict[str, Decimal] = {}
    for _, quantities in days:
        add_quantities(cumulative, quantities)
        charges.append(pricing.charge_minor(cumulative, plan_pricing, currency=row.currency,
                                            opencost_currency=opencost_currency))
    return pricing.daily_shares(charges)


@dataclass(frozen=True)
class Aggregated:
    samples: int
    accounts: set[uuid.UUID]
    last_id: int = 0  # the last sample taken: the next batch starts after it


async def aggregate(session: AsyncSession, settings: Settings, now: datetime, *, after: int = 0) -> Aggregated:
    """Add the samples not yet in usage_daily to it, marked in the same transaction (a crash loses neither the
    samples nor the marks: both roll back), then re-price the months they touch. A window stored again adds
    nothing (its samples are stored once), so nothing is counted twice. One aggregation at a time; a long
    backlog is taken in batches by the caller."""
    repository = MeteringRepository(session)
    await repository.lock_aggregation()
    taken, last_id, sums = await repository.take_batch(settings.metering_aggregate_batch, now, after=after)
    if not sums:
        return Aggregated(taken, set(), last_id)
    existing = await repository.daily_for_update((s.account_id, s.day) for s in sums)
    rows = []
    for day_sums in sums:
        known = existing.get((day_sums.account_id, day_sums.day))
        per_instance = {instance: decimals(metrics) for instance, metrics in (known.breakdown if known else {}).items()}
        for instance, metrics in day_sums.per_instance.items():
            add_quantities(per_instance.setdefault(str(instance or ""), {}), metrics)
        totals: dict[str, Decimal] = {}
        for metrics in per_instance.values():
            add_quantities(totals, metrics)
        per_project = {project: decimals(metrics)
                       for project, metrics in (known.project_breakdown if known else {}).items()}
        for project, metrics in day_sums.per_project.items():
            add_quantities(per_project.setdefault(project, {}), metrics)
        rows.append({
            "account_id": day_sums.account_id, "day": day_sums.day,
            "sources": sorted(set(day_sums.sources) | set(known.sources if known else [])),
            "quantities": decimal_strings(totals),
            "breakdown": {instance: decimal_strings(metrics) for instance, metrics in sorted(per_instance.items())},
            "project_breakdown": {project: decimal_strings(metrics) for project, metrics in sorted(per_project.items())},
            "cost_minor": 0, "currency": None, "updated_at": now,
        })
    await repository.upsert_daily(rows)
    await reprice(session, settings, {(s.account_id, month_of(s.day)) for s in sums})
    return Aggregated(taken, {s.account_id for s in sums}, last_id)


async def reprice(session: AsyncSession, settings: Settings, months: Iterable[tuple[uuid.UUID, date]]) -> None:
    """The named account-months priced again from their daily quantities, each day given its share."""
    repository = MeteringRepository(session)
    by_month: dict[date, list[uuid.UUID]] = defaultdict(list)
    for account_id, month in sorted(set(months)):
        by_month[month].append(account_id)
    costs: list[tuple[uuid.UUID, date, int, str | None]] = []
    for month, account_ids in sorted(by_month.items()):
        plans = await repository.pricing(account_ids, as_instant(month))
        rows = await repository.daily(account_ids, month, next_month(month))
        per_account: dict[uuid.UUID, list[tuple[date, dict[str, Decimal]]]] = defaultdict(list)
        stored: dict[uuid.UUID, list[tuple[int, str | None]]] = defaultdict(list)
        for daily in rows:
            per_account[daily.account_id].append((daily.day, decimals(daily.quantities)))
            stored[daily.account_id].append((daily.cost_minor, daily.currency))
        for account_id, days in per_account.items():
            row = plans.get(account_id)
            shares = month_costs(days, row, opencost_currency=settings.opencost_currency)
            currency = row.currency if row else None
            costs += [(account_id, day, share, currency) for (day, _), share, known in zip(days, shares, stored[account_id],
                                                                                             strict=True)
                      if known != (share, currency)]  # only the days whose share changed
    await repository.set_costs(costs)


# --- the month: spend, forecast -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonthToDate:
    month: date
    quantities: dict[str, Decimal]
    spent_minor: int
    forecast_minor: int
    currency: str | None


def decimals(stored: dict[str, str]) -> dict[str, Decimal]:
    """Quantities as usage_daily keeps them (decimal strings), read back exactly."""
    return {metric: Decimal(value) for metric, value in stored.items()}


async def month_usage(session: AsyncSession, account_id: uuid.UUID, month: date
                      ) -> tuple[list[UsageDaily], dict[str, Decimal], PricingRow | None]:
    """An account's days of a month, their summed quantities, and the plan that prices them (as `reprice`
    chooses it: the one of the month's start)."""
    repository = MeteringRepository(session)
    rows = await repository.daily([account_id], month, next_month(month))
    quantities: dict[str, Decimal] = {}
    for daily in rows:
        add_quantities(quantities, decimals(daily.quantities))
    return rows, quantities, (await repository.pricing([account_id], as_instant(month))).get(account_id)


def exact_charge(quantities: dict[str, Decimal], row: PricingRow | None, settings: Settings) -> Decimal:
    if row is None:
        return Decimal(0)
    return pricing.charge_minor(quantities, usage_pricing(row), currency=row.currency,
                                opencost_currency=settings.opencost_currency)


async def month_to_date(session: AsyncSession, settings: Settings, account_id: uuid.UUID, now: datetime) -> MonthToDate:
    """The month's usage and charge so far, and the charge at the end of the month if usage goes on at the
    month's average rate so far (priced, so what the plan includes is taken off once)."""
    month = month_of(now)
    rows, quantities, row = await month_usage(session, account_id, month)
    spent = sum(daily.cost_minor for daily in rows)
    elapsed = (now - as_instant(month)).total_seconds()
    whole = (as_instant(next_month(month)) - as_instant(month)).total_seconds()
    forecast = spent
    if row is not None and elapsed > 0:
        scale = Decimal(whole) / Decimal(elapsed)
        projected = {m: v if m in PEAK_METRICS else v * scale for m, v in quantities.items()}
        forecast = max(spent, pricing.rounded(exact_charge(projected, row, settings)))
    return MonthToDate(month, quantities, spent, forecast, row.currency if row else None)


async def month_charge_exact(session: AsyncSession, settings: Settings, account_id: uuid.UUID, month: date) -> Decimal:
    """The month's usage charge so far, exact (not rounded): what the Stripe report counts in whole units."""
    _, quantities, row = await month_usage(session, account_id, month)
    return exact_charge(quantities, row, settings)


# --- budgets ------------------------------------------------------------------------------------------------


async def account_currency(session: AsyncSession, account: Account, now: datetime) -> str | None:
    """The currency an account pays in: its plan's. None before it has a subscription."""
    row = (await MeteringRepository(session).pricing([account.id], now)).get(account.id)
    return row.currency if row else None


async def set_budget(session: AsyncSession, *, account: Account, limit_minor: int | None, currency: str | None,
                     now: datetime) -> Account:
    """The monthly budget on usage charges (null: none). In the account's currency; it takes effect at once:
    a raised budget lifts a throttle or a suspension it caused, a lowered one imposes them."""
    if limit_minor is not None:
        if currency is None:
            raise Unprocessable("A budget needs its currency", details={"field": "currency"})
        paying = await account_currency(session, account, now)
        if paying is not None and currency != paying:
            raise Unprocessable(f"The budget must be in the account's currency, {paying}",
                                   code="budget_currency_mismatch", details={"currency": paying})
        if not money.is_known(currency):
            raise Unprocessable(f"Unknown currency {currency!r}", details={"field": "currency"})
    before = {"budget_minor": account.budget_minor, "budget_currency": account.budget_currency}
    account.budget_minor, account.budget_currency = limit_minor, currency if limit_minor is not None else None
    after = {"budget_minor": account.budget_minor, "budget_currency": account.budget_currency}
    if before != after:
        await session.flush()
        await audit.record(session, action="account.budget_set", target_type="account", target_id=account.id,
                           account_id=account.id, before=before, after=after)
        request_reconcile(account.id)
    return account


def budget_percent(spent_minor: int, limit_minor: int | None) -> int | None:
    return None if not limit_minor else spent_minor * 100 // limit_minor


async def check_budgets(session: AsyncSession, settings: Settings, account_ids: Iterable[uuid.UUID],
                        now: datetime) -> list[tuple[uuid.UUID, int]]:
    """After an aggregation: each account's budget against its spend this month. The highest threshold newly
    reached is e-mailed (the lower ones it overtook are recorded, not sent late), once per month each; an
    account at or past 100 % is reconciled (throttled, or suspended at 120 %). Returns the alerts sent."""
    repository, billing = MeteringRepository(session), BillingRepository(session)
    month = month_of(now)
    sent: list[tuple[uuid.UUID, int]] = []
    for account in await repository.accounts(sorted(set(account_ids))):
        spent = await billing.month_spend(account.id, now)
        percent = budget_percent(spent, account.budget_minor)
        if percent is None or account.budget_minor is None:
            continue
        reached = [t for t in BUDGET_ALERT_THRESHOLDS if percent >= t]
        already = await repository.alerts_sent(account.id, month)
        new = [t for t in reached if t not in already]
        claimed = [t for t in new if await repository.claim_alert(account.id, month, t, spent, account.budget_minor)]
        if claimed:
            threshold = max(claimed)
            await audit.record(session, action="account.budget_alert_sent", target_type="account",
                               target_id=account.id, account_id=account.id, actor=context.SYSTEM,
                               after={"threshold": threshold, "month": month.isoformat(), "spent_minor": spent,
                                      "limit_minor": account.budget_minor})
            if account.billing_email:
                currency = account.budget_currency or await account_currency(session, account, now)
                await queue_email(session, to=account.billing_email, template="budget_alert", values={
                    "account_name": account.name, "percent": str(threshold), "base_url": settings.base_url,
                    "spent": shown_amount(spent, currency), "limit": shown_amount(account.budget_minor, currency),
                    "consequence": budget_consequence(percent),
                })
            sent.append((account.id, threshold))
        if percent >= 100 or claimed:
            request_reconcile(account.id)
    return sent


def shown_amount(amount_minor: int, currency: str | None) -> str:
    if currency is None or not money.is_known(currency):
        return f"{amount_minor} (minor units)"
    return f"{money.format_minor(amount_minor, currency)} {currency}"


def budget_consequence(percent: int) -> str:
    if percent >= 120:
        return "Its services are suspended until the budget is raised or the month ends."
    if percent >= 100:
        return ("Its services are throttled (they keep running, slower) until the budget is raised or the month "
                "ends; at 120 % they are suspended.")
    return "At 100 % its services are throttled, at 120 % suspended, until the budget is raised or the month ends."


# --- reading usage --------------------------------------------------------------------------------------------


@dataclass
class UsageBucket:
    start: datetime
    end: datetime
    quantities: dict[str, Decimal]
    per_instance: dict[str, dict[str, Decimal]]
    cost_minor: int | None  # None: hours are not priced (a day's share is the smallest priced unit)
    per_project: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # seat holders' projects


def bucket_start(moment: datetime, granularity: str) -> datetime:
    moment = moment.astimezone(UTC)
    if granularity == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    if granularity == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return as_instant(month_of(moment))


def bucket_end(start: datetime, granularity: str) -> datetime:
    if granularity == "hour":
        return start + timedelta(hours=1)
    if granularity == "day":
        return start + timedelta(days=1)
    return as_instant(next_month(start.date()))


async def usage_buckets(session: AsyncSession, account_id: uuid.UUID, *, start: datetime, end: datetime,
                        granularity: str) -> list[UsageBucket]:
    """An account's usage in [start, end) by hour (from the raw samples, while they are kept), day or month
    (from usage_daily), with totals and per-instance quantities, and the charge of each day or month."""
    repository = MeteringRepository(session)
    buckets: dict[datetime, UsageBucket] = {}

    def bucket(at: datetime) -> UsageBucket:
        key = bucket_start(at, granularity)
        return buckets.setdefault(key, UsageBucket(key, bucket_end(key, granularity), {}, {},
                                                   None if granularity == "hour" else 0))

    if granularity == "hour":
        for window_start, instance_id, project, metric, quantity in await repository.samples(account_id, start, end):
            found = bucket(window_start)
            add_quantities(found.quantities, {metric: quantity})
            add_quantities(found.per_instance.setdefault(str(instance_id or ""), {}), {metric: quantity})
            if project is not None:
                add_quantities(found.per_project.setdefault(project, {}), {metric: quantity})
    else:
        first, last = start.astimezone(UTC).date(), (end - timedelta(microseconds=1)).astimezone(UTC).date()
        for daily in await repository.daily([account_id], first, last + timedelta(days=1)):
            found = bucket(as_instant(daily.day))
            add_quantities(found.quantities, decimals(daily.quantities))
            for instance, metrics in daily.breakdown.items():
                add_quantities(found.per_instance.setdefault(instance, {}), decimals(metrics))
            for project, metrics in daily.project_breakdown.items():
                add_quantities(found.per_project.setdefault(project, {}), decimals(metrics))
            found.cost_minor = (found.cost_minor or 0) + daily.cost_minor
    return [buckets[at] for at in sorted(buckets)]


def check_range(start: datetime, end: datetime, granularity: str, *, retention_days: int, now: datetime) -> None:
    if end <= start:
        raise Unprocessable("`to` must be after `from`", details={"field": "to"})
    limits = {"hour": timedelta(days=7), "day": timedelta(days=400), "month": timedelta(days=3700)}
    if end - start > limits[granularity]:
        raise Unprocessable(f"At most {limits[granularity].days} days at a time by {granularity}",
                               details={"field": "to"})
    if granularity == "hour" and start < now - timedelta(days=retention_days):
        raise Conflict(f"Hourly usage is kept {retention_days} days; ask by day or month for older usage",
                       code="usage_hours_expired")


# --- the local runtime's counters -------------------------------------------------------------------------------


def counter_delta(previous: tuple[str, Decimal] | None, identity: str, value: Decimal, *, fresh: bool) -> Decimal:
    """What a cumulative counter counted since its last reading. A new identity (another process, a restarted
    router) or a value below the last is a counter that started again from zero: all of its value is new. A
    counter never read before counts only if it started within the window (`fresh`); otherwise that first
    reading is the baseline, since what it counted before belongs to no window we know."""
    if previous is None:
        return value if fresh else Decimal(0)
    last_identity, last_value = previous
    if identity != last_identity or value < last_value:
        return value
    return value - last_value


def positive(metric: Metric, quantity: Decimal, what: str, warnings: list[str]) -> bool:
    if quantity.is_nan() or quantity.is_infinite() or quantity < 0:
        warnings.append(f"{metric.value} of {what}: {quantity} skipped")
        return False
    return True


async def record_session_usage(session: AsyncSession, *, account_id: uuid.UUID, pool_id: uuid.UUID,
                               session_id: uuid.UUID, start: datetime, end: datetime, now: datetime) -> None:
    """A browser session's seconds, to the millisecond (billed per second as session-minutes, with no minimum):
    one sample, stored once per session, summed with the rest of the account's usage."""
    seconds = Decimal(int((end - start).total_seconds() * 1000)) / 1000
    await MeteringRepository(session).insert_samples([{
        "source": "sessions", "source_id": f"session:{session_id}", "scope": "local", "account_id": account_id,
        "instance_id": pool_id, "subject": f"session {session_id}", "project": None,
        "metric": Metric.session_seconds.value,
        "window_start": start, "window_end": end, "quantity": seconds, "recorded_at": now,
    }])
