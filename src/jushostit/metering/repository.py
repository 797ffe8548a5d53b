"""Every query metering makes, and every tenant filter on usage."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ARRAY, Date, and_, bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.metering.readings import PEAK_METRICS
from jushostit.models import (
    Account,
    AccountPlacement,
    BudgetAlert,
    Instance,
    MeterCounter,
    MeteringRun,
    MeterReport,
    Plan,
    Platform,
    Seat,
    SeatProject,
    Subscription,
    UsageDaily,
    UsageSample,
)

# Rows per INSERT: PostgreSQL takes at most 65,535 parameters in one statement (13 per sample).
INSERT_CHUNK = 4000
# Samples aggregated per transaction: a long catch-up is done in steps, each committed.
AGGREGATE_BATCH = 50_000
AGGREGATION_LOCK = 0x4A48_4147  # "JHAG": one aggregation at a time (pg_advisory_xact_lock)


@dataclass(frozen=True)
class DaySums:
    """One account's day, summed from its samples: per instance (None: the account's own, such as volumes)
    and metric, the total (a peak: the largest)."""

    account_id: uuid.UUID
    day: date
    sources: list[str]
    per_instance: dict[uuid.UUID | None, dict[str, Decimal]]
    per_project: dict[str, dict[str, Decimal]] = field(default_factory=dict)  # seat holders' projects


@dataclass(frozen=True)
class PricingRow:
    """The plan that prices an account's usage: its subscription's plan, most recent first."""

    account_id: uuid.UUID
    currency: str
    usage_pricing: dict[str, Any] | None


# One statement: take the oldest unaggregated samples after `after` (locked, so a second aggregator would skip
# them), mark them, and return their sums per account, day (UTC), instance and metric, with how many were marked
# and the last id taken. Starting after the previous batch's last id, the index scan does not walk over the
# entries the previous batches left behind (dead until vacuumed), which made a long backlog quadratic; and the
# ids as one array make the UPDATE find its rows by primary key, not by scanning the table once per batch.
_TAKE_BATCH = text("""
WITH batch AS (
    UPDATE usage_samples SET aggregated_at = :now
    WHERE id = ANY(ARRAY(SELECT id FROM usage_samples WHERE aggregated_at IS NULL AND id > :after ORDER BY id
                         LIMIT :limit FOR UPDATE SKIP LOCKED))
    RETURNING id, account_id, instance_id, project, metric, quantity, source, window_start
)
SELECT account_id, (window_start AT TIME ZONE 'UTC')::date AS day, instance_id, project, metric,
       sum(quantity) AS total, max(quantity) AS peak, array_agg(DISTINCT source) AS sources,
       sum(count(*)) OVER () AS taken, max(max(id)) OVER () AS last_id
FROM batch GROUP BY account_id, day, instance_id, project, metric
""")


_KEY_ACCOUNTS = bindparam("key_accounts", type_=ARRAY(PG_UUID(as_uuid=True)))
_KEY_DAYS = bindparam("key_days", type_=ARRAY(Date))


class MeteringRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- runs ---------------------------------------------------------------------------------------------
    async def add(self, *objects: object) -> None:
        self.session.add_all(objects)
        await self.session.flush()

    async def last_window_end(self, collector: str, scope: str) -> datetime | None:
        """Where the next run starts: the end of the last successful run's window."""
        return await self.session.scalar(
            select(func.max(MeteringRun.window_end)).where(
                MeteringRun.collector == collector, MeteringRun.scope == scope, MeteringRun.status == "succeeded"
            )
        )

    async def runs(self, *, collector: str | None, limit: int, before: datetime | None) -> list[MeteringRun]:
        query = select(MeteringRun).order_by(MeteringRun.started_at.desc(), MeteringRun.id).limit(limit)
        if collector:
            query = query.where(MeteringRun.collector == collector)
        if before:
            query = query.where(MeteringRun.started_at < before)
        return list((await self.session.scalars(query)).all())

    async def latest_runs(self) -> list[MeteringRun]:
        """The newest run of each collector and scope."""
        newest = (
            select(MeteringRun.collector, MeteringRun.scope, func.max(MeteringRun.started_at).label("at"))
            .group_by(MeteringRun.collector, MeteringRun.scope)
            .subquery()
        )
        query = select(MeteringRun).join(
            newest, and_(MeteringRun.collector == newest.c.collector, MeteringRun.scope == newest.c.scope,
                         MeteringRun.started_at == newest.c.at)
        ).order_by(MeteringRun.collector, MeteringRun.scope)
        return list((await self.session.scalars(query)).all())

    async def collector_health(self) -> list[tuple[MeteringRun, datetime | None]]:
        """Per collector and scope: its newest run, and the end of its last successful window (how far usage
        has been read)."""
        return [(run, await self.last_window_end(run.collector, run.scope)) for run in await self.latest_runs()]

    # --- subjects -------------------------------------------------------------------------------------------
    async def existing_accounts(self, account_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        ids = list(set(account_ids))
        if not ids:
            return set()
        return set((await self.session.scalars(select(Account.id).where(Account.id.in_(ids)))).all())

    async def accounts_on_cluster(self, cluster_id: uuid.UUID, account_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        ids = list(set(account_ids))
        if not ids:
            return set()
        return set((await self.session.scalars(
            select(AccountPlacement.account_id).where(AccountPlacement.cluster_id == cluster_id,
                                                      AccountPlacement.account_id.in_(ids))
        )).all())

    async def seat_projects_on_cluster(self, cluster_id: uuid.UUID,
                                       namespaces: Iterable[str]) -> dict[str, tuple[uuid.UUID, uuid.UUID]]:
        """Of these namespaces, those a data platform running on the cluster runs a live seat's projects in:
        namespace → (the seat's account, the seat)."""
        wanted = sorted(set(namespaces))
        if not wanted:
            return {}
        rows = await self.session.execute(
            select(SeatProject.namespace, Instance.account_id, Instance.id)
            .join(Seat, Seat.instance_id == SeatProject.instance_id)
            .join(Platform, Platform.id == Seat.platform_id)
            .join(Instance, Instance.id == Seat.instance_id)
            .where(Platform.cluster_id == cluster_id, Seat.removed_at.is_(None), SeatProject.namespace.in_(wanted))
        )
        return {namespace: (account_id, instance_id) for namespace, account_id, instance_id in rows}

    async def instance_slugs(self, account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, dict[str, uuid.UUID]]:
        """Each account's instances by slug, deleted ones included (their last usage still counts)."""
        ids = list(set(account_ids))
        found: dict[uuid.UUID, dict[str, uuid.UUID]] = {}
        if ids:
            rows = await self.session.execute(
                select(Instance.account_id, Instance.slug, Instance.id).where(Instance.account_id.in_(ids))
            )
            for account_id, slug, instance_id in rows:
                found.setdefault(account_id, {})[slug] = instance_id
        return found

    # --- samples ----------------------------------------------------------------------------------------------
    async def insert_samples(self, rows: Sequence[dict[str, Any]]) -> int:
        """Stored once per (source, source_id): a window read again adds nothing. Returns how many were new."""
        inserted = 0
        for start in range(0, len(rows), INSERT_CHUNK):
            statement = (
                insert(UsageSample).values(list(rows[start:start + INSERT_CHUNK]))
                .on_conflict_do_nothing(constraint="uq_usage_samples_source_id")
                .returning(UsageSample.id)
            )
            inserted += len((await self.session.scalars(statement)).all())
        return inserted

    async def lock_aggregation(self) -> None:
        await self.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": AGGREGATION_LOCK})

    async def take_batch(self, limit: int, now: datetime, *, after: int = 0) -> tuple[int, int, list[DaySums]]:
        """The oldest `limit` samples not yet in usage_daily, marked and summed per account and day in one
        statement: exactly the samples summed are the ones marked, and the marks commit (or roll back) with the
        caller's write of the sums. Samples of no account are marked and not summed (never billed). Returns
        how many were taken, the last id taken (`after` for the next batch), and the sums."""
        rows = (await self.session.execute(_TAKE_BATCH, {"limit": limit, "now": now, "after": after})).all()
        taken, last_id = (int(rows[0].taken), int(rows[0].last_id)) if rows else (0, after)
        found: dict[tuple[uuid.UUID, date], DaySums] = {}
        for row in rows:
            if row.account_id is None:
                continue
            sums = found.setdefault((row.account_id, row.day), DaySums(row.account_id, row.day, [], {}))
            sums.sources.extend(s for s in row.sources if s not in sums.sources)
            quantity = row.peak if row.metric in PEAK_METRICS else row.total
            metrics = sums.per_instance.setdefault(row.instance_id, {})
            # One instance's rows of several projects (a seat's) add up; a peak is the largest of them.
            metrics[row.metric] = (max(metrics.get(row.metric, quantity), quantity) if row.metric in PEAK_METRICS
                                   else metrics.get(row.metric, Decimal(0)) + quantity)
            if row.project is not None:  # the same project under two seats of the day (one made again) adds up
                project = sums.per_project.setdefault(row.project, {})
                project[row.metric] = (max(project.get(row.metric, quantity), quantity)
                                       if row.metric in PEAK_METRICS else project.get(row.metric, Decimal(0)) + quantity)
        for sums in found.values():
            sums.sources.sort()
        return taken, last_id, [found[key] for key in sorted(found)]

    async def daily_for_update(self, keys: Iterable[tuple[uuid.UUID, date]]) -> dict[tuple[uuid.UUID, date], UsageDaily]:
        """The named account-days, locked. The keys go as two arrays zipped by unnest: a row-value IN list of
        10,000 pairs exceeds PostgreSQL's expression depth."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        pairs = select(func.unnest(_KEY_ACCOUNTS).label("account_id"), func.unnest(_KEY_DAYS).label("day")).subquery()
        rows = (await self.session.scalars(
            select(UsageDaily)
            .join(pairs, and_(UsageDaily.account_id == pairs.c.account_id, UsageDaily.day == pairs.c.day))
            .order_by(UsageDaily.account_id, UsageDaily.day).with_for_update(of=UsageDaily),
            {"key_accounts": [a for a, _ in wanted], "key_days": [d for _, d in wanted]},
        )).all()
        return {(row.account_id, row.day): row for row in rows}

    async def upsert_daily(self, rows: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(rows), INSERT_CHUNK):
            statement = insert(UsageDaily).values(list(rows[start:start + INSERT_CHUNK]))
            await self.session.execute(statement.on_conflict_do_update(
                index_elements=[UsageDaily.account_id, UsageDaily.day],
                set_={"sources": statement.excluded.sources, "quantities": statement.excluded.quantities,
                      "breakdown": statement.excluded.breakdown,
                      "project_breakdown": statement.excluded.project_breakdown,
                      "updated_at": statement.excluded.updated_at},
            ))

    async def daily(self, account_ids: Sequence[uuid.UUID], start: date, end: date) -> list[UsageDaily]:
        """Days in [start, end) of the accounts, in day order."""
        if not account_ids:
            return []
        return list((await self.session.scalars(
            select(UsageDaily).where(UsageDaily.account_id.in_(list(account_ids)), UsageDaily.day >= start,
                                     UsageDaily.day < end).order_by(UsageDaily.account_id, UsageDaily.day)
            .execution_options(populate_existing=True)  # rows this transaction just upserted, as they are now
        )).all())

    async def set_costs(self, costs: Sequence[tuple[uuid.UUID, date, int, str | None]]) -> None:
        """Each day's share of its month's charge: one bulk UPDATE by primary key (executemany)."""
        if costs:
            await self.session.execute(
                update(UsageDaily).execution_options(synchronize_session=False),
                [{"account_id": a, "day": d, "cost_minor": c, "currency": cur} for a, d, c, cur in costs],
            )

    async def pricing(self, account_ids: Sequence[uuid.UUID], at: datetime) -> dict[uuid.UUID, PricingRow]:
        """The plan that prices each account's usage at `at`: the subscription entitling it then, else its most
        recent subscription (usage after the end is still priced as it was)."""
        if not account_ids:
            return {}
        rows = await self.session.execute(
            select(Subscription.account_id, Plan.currency, Plan.usage_pricing)
            .join(Plan, Plan.id == Subscription.plan_id)
            .where(Subscription.account_id.in_(list(account_ids)), Subscription.status != "pending")
            .order_by(Subscription.account_id,
                      ((Subscription.current_period_start <= at) & (Subscription.current_period_end > at)).desc(),
                      Subscription.current_period_end.desc())
            .ext(distinct_on(Subscription.account_id))
        )
        return {row.account_id: PricingRow(row.account_id, row.currency, row.usage_pricing) for row in rows}

    async def samples(self, account_id: uuid.UUID, start: datetime, end: datetime
                      ) -> list[tuple[datetime, uuid.UUID | None, str | None, str, Decimal]]:
        """An account's samples whose window starts in [start, end): (window start, instance, project, metric,
        quantity)."""
        rows = await self.session.execute(
            select(UsageSample.window_start, UsageSample.instance_id, UsageSample.project, UsageSample.metric,
                   UsageSample.quantity)
            .where(UsageSample.account_id == account_id, UsageSample.window_start >= start,
                   UsageSample.window_start < end)
            .order_by(UsageSample.window_start)
        )
        return [(row.window_start, row.instance_id, row.project, row.metric, row.quantity) for row in rows]

    async def purge_samples(self, recorded_before: datetime) -> int:
        """Raw samples older than the retention go; usage_daily keeps their sums. Only aggregated ones."""
        result = await self.session.execute(
            delete(UsageSample).where(UsageSample.recorded_at < recorded_before, UsageSample.aggregated_at.is_not(None))
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def unmapped(self, since: datetime, limit: int) -> list[tuple[str, str, str, int, datetime, datetime]]:
        """Subjects no account owns, seen since `since`: (source, scope, subject, samples, first, last)."""
        rows = await self.session.execute(
            select(UsageSample.source, UsageSample.scope, UsageSample.subject, func.count(),
                   func.min(UsageSample.window_start), func.max(UsageSample.window_end))
            .where(UsageSample.account_id.is_(None), UsageSample.window_end > since)
            .group_by(UsageSample.source, UsageSample.scope, UsageSample.subject)
            .order_by(func.max(UsageSample.window_end).desc()).limit(limit)
        )
        return [(r[0], r[1], r[2], int(r[3]), r[4], r[5]) for r in rows]

    # --- spend, budgets -------------------------------------------------------------------------------------
    async def top_spenders(self, month: date, next_month: date, limit: int) -> list[tuple[uuid.UUID, str, int, str | None]]:
        rows = await self.session.execute(
            select(UsageDaily.account_id, Account.name, func.sum(UsageDaily.cost_minor).label("spent"),
                   func.max(UsageDaily.currency))
            .join(Account, Account.id == UsageDaily.account_id)
            .where(UsageDaily.day >= month, UsageDaily.day < next_month)
            .group_by(UsageDaily.account_id, Account.name)
            .order_by(func.sum(UsageDaily.cost_minor).desc(), UsageDaily.account_id).limit(limit)
        )
        return [(r[0], r[1], int(r[2]), r[3]) for r in rows]

    async def accounts(self, account_ids: Sequence[uuid.UUID]) -> list[Account]:
        if not account_ids:
            return []
        return list((await self.session.scalars(
            select(Account).where(Account.id.in_(list(account_ids))).order_by(Account.id)
        )).all())

    async def alerts_sent(self, account_id: uuid.UUID, month: date) -> set[int]:
        return set((await self.session.scalars(
            select(BudgetAlert.threshold).where(BudgetAlert.account_id == account_id, BudgetAlert.month == month)
        )).all())

    async def claim_alert(self, account_id: uuid.UUID, month: date, threshold: int, spent: int, limit: int) -> bool:
        """Once per account, month and threshold (compare-and-set on the primary key)."""
        inserted = await self.session.scalar(
            insert(BudgetAlert).values(account_id=account_id, month=month, threshold=threshold, spent_minor=spent,
                                       limit_minor=limit).on_conflict_do_nothing().returning(BudgetAlert.threshold)
        )
        return inserted is not None

    # --- counters ---------------------------------------------------------------------------------------------
    async def counters(self, keys: Iterable[str]) -> dict[str, MeterCounter]:
        wanted = list(set(keys))
        if not wanted:
            return {}
        return {c.key: c for c in (await self.session.scalars(
            select(MeterCounter).where(MeterCounter.key.in_(wanted)).with_for_update()
        )).all()}

    async def save_counters(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            statement = insert(MeterCounter).values(list(rows))
            await self.session.execute(statement.on_conflict_do_update(
                index_elements=[MeterCounter.key],
                set_={"identity": statement.excluded.identity, "value": statement.excluded.value,
                      "read_at": statement.excluded.read_at},
            ))

    # --- Stripe meter reports -----------------------------------------------------------------------------
    async def reported(self, account_id: uuid.UUID, month: date) -> int:
        """What was reported (or is being reported) for the month: sent and pending events alike."""
        total = await self.session.scalar(
            select(func.coalesce(func.sum(MeterReport.value), 0))
            .where(MeterReport.account_id == account_id, MeterReport.month == month)
        )
        return int(total or 0)

    async def pending_reports(self) -> list[MeterReport]:
        return list((await self.session.scalars(
            select(MeterReport).where(MeterReport.status == "pending").order_by(MeterReport.created_at)
            .with_for_update(skip_locked=True)
        )).all())

    async def reports(self, limit: int, *, status: str | None = None) -> list[MeterReport]:
        query = select(MeterReport).order_by(MeterReport.created_at.desc(), MeterReport.id).limit(limit)
        if status is not None:
            query = query.where(MeterReport.status == status)
        return list((await self.session.scalars(query)).all())

    async def card_accounts_with_usage(self, month: date, next_month: date) -> list[Account]:
        return list((await self.session.scalars(
            select(Account).where(Account.billing_mode == "card", Account.provider_customer_id.is_not(None),
                                  Account.id.in_(select(UsageDaily.account_id).where(
                                      UsageDaily.day >= month, UsageDaily.day < next_month)))
            .order_by(Account.id)
        )).all())
