"""The entitlement decision.

Levels, best first: running > throttled > stopped > expired > deleted. An account's level is the worst that
any fact imposes; an instance's level is the worse of the account's and its own. Nothing here is stored as a
state machine: the level is recomputed from the facts every time (REFERENCE §1 F4, F17, F18).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta


class Level(enum.IntEnum):
    """Ordered: a larger value is a better level."""

    deleted = 0
    expired = 1
    stopped = 2
    throttled = 3
    running = 4

    def __str__(self) -> str:
        return self.name


class Access(enum.StrEnum):
    full = "full"
    read_only = "read_only"
    none = "none"


BUDGET_THROTTLE_PERCENT = 100
BUDGET_SUSPEND_PERCENT = 120
# A prepaid contract's end is announced in the banner this long before it.
CONTRACT_END_NOTICE = timedelta(days=14)


@dataclass(frozen=True)
class Quotas:
    cpu_millicores: int = 0
    memory_mib: int = 0
    storage_gib: int = 0
    max_instances: int = 0
    concurrent_sessions: int = 0  # browser sessions open at once
    session_max_minutes: int = 0  # the longest a browser session may last (the longest of the plans)

    def __add__(self, other: Quotas) -> Quotas:
        return Quotas(
            self.cpu_millicores + other.cpu_millicores,
            self.memory_mib + other.memory_mib,
            self.storage_gib + other.storage_gib,
            self.max_instances + other.max_instances,
            self.concurrent_sessions + other.concurrent_sessions,
            max(self.session_max_minutes, other.session_max_minutes),
        )


@dataclass(frozen=True)
class SubscriptionFacts:
    id: uuid.UUID
    plan_code: str
    status: str  # pending | active | cancelled
    period_start: datetime
    period_end: datetime
    quotas: Quotas
    cancelled_at: datetime | None = None  # cancel "now": entitlement ends at this instant

    def entitles_at(self, now: datetime) -> bool:
        if self.status == "pending":
            return False
        end = min(self.period_end, self.cancelled_at) if self.cancelled_at else self.period_end
        return self.period_start <= now < end

    def ended_at(self) -> datetime:
        return min(self.period_end, self.cancelled_at) if self.cancelled_at else self.period_end


@dataclass(frozen=True)
class DunningPolicy:
    grace: timedelta = timedelta(days=7)  # past due for this long → suspended (billing)
    expired_retention: timedelta = timedelta(days=30)  # expired data kept this long, then deleted
    terminate_after: timedelta | None = None  # suspended for billing this long → terminated (deleted); None: never
    reminders: tuple[timedelta, ...] = ()  # past due this long → a reminder (e-mails; no effect on the level)

    def terminates_at(self, past_due_since: datetime) -> datetime | None:
        return None if self.terminate_after is None else past_due_since + self.grace + self.terminate_after

    def stages(self, past_due_since: datetime) -> list[DunningStage]:
        """The e-mails of a past-due episode, in order: payment failed, each reminder, the suspension warning a
        day before the grace ends (when the grace is longer than that; a reminder from then on is left to the
        warning), suspended."""
        suspends_at = past_due_since + self.grace
        warning_at = suspends_at - SUSPENSION_WARNING_LEAD if self.grace > SUSPENSION_WARNING_LEAD else None
        last_reminder = warning_at or suspends_at
        stages = [DunningStage("payment_failed", 0, past_due_since)]
        stages += [DunningStage("reminder", number, past_due_since + after)
                   for number, after in enumerate(sorted(self.reminders), 1) if past_due_since + after < last_reminder]
        if warning_at is not None:
            stages.append(DunningStage("suspension_warning", 0, warning_at))
        stages.append(DunningStage("suspended", 0, suspends_at))
        return stages


SUSPENSION_WARNING_LEAD = timedelta(days=1)


@dataclass(frozen=True)
class DunningStage:
    """One e-mail of a past-due episode: its kind, the reminder's number (0 for the other kinds), and when it
    is due."""

    kind: str
    step: int
    at: datetime


def current_dunning_stage(past_due_since: datetime | None, policy: DunningPolicy, now: datetime) -> DunningStage | None:
    """The stage a past-due episode has reached at `now`: the one e-mail due. A stage overtaken by a later one
    (after downtime, or a payment failure learnt late) is never sent late: the later one says it all."""
    if past_due_since is None:
        return None
    reached = [stage for stage in policy.stages(past_due_since) if stage.at <= now]
    return reached[-1] if reached else None


@dataclass(frozen=True)
class BudgetFacts:
    limit_minor: int | None = None  # None: no budget
    spent_minor: int = 0  # this month's usage charges
    resets_at: datetime | None = None  # the next month's start: the spend begins again from zero

    @property
    def holds_back(self) -> bool:
        """At or past the throttle: the month's end changes the decision by itself."""
        percent = self.percent
        return percent is not None and percent >= BUDGET_THROTTLE_PERCENT

    @property
    def percent(self) -> int | None:
        if not self.limit_minor:
            return None
        return self.spent_minor * 100 // self.limit_minor


@dataclass(frozen=True)
class AccountFacts:
    status: str  # pending | active | past_due | suspended | cancelled | terminated
    suspension_reasons: frozenset[str] = frozenset()
    past_due_since: datetime | None = None
    contract_ends_at: datetime | None = None  # a prepaid contract's end: held (`contract`) from that instant


@dataclass(frozen=True)
class InstanceFacts:
    id: uuid.UUID
    delete_requested_at: datetime | None = None  # delete now, or at this instant (period end)


@dataclass(frozen=True)
class InstanceEntitlement:
    level: Level
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Entitlement:
    level: Level
    reasons: tuple[str, ...]
    access: Access
    warning_banner: str | None
    quotas: Quotas
    instances: dict[uuid.UUID, InstanceEntitlement] = field(default_factory=dict)
    holds: frozenset[str] = frozenset()  # suspension reasons in force (stored and derived)
    # The account's status as the facts say it now (the stored status is only a cache of this).
    account_status: str = "active"

    @property
    def can_order(self) -> bool:
        return self.level >= Level.throttled and self.access == Access.full


def _subscription_level(subscriptions: list[SubscriptionFacts], policy: DunningPolicy, now: datetime) -> tuple[Level, str | None]:
    if any(s.entitles_at(now) for s in subscriptions):
        return Level.running, None
    ended = [s.ended_at() for s in subscriptions if s.status != "pending" and s.ended_at() <= now]
    if not ended:
        return Level.stopped, "no active subscription"
    if now - max(ended) >= policy.expired_retention:
        return Level.deleted, "subscription ended and the retention period is over"
    return Level.expired, "subscription ended"


def entitlement(
    account: AccountFacts,
    subscriptions: list[SubscriptionFacts],
    policy: DunningPolicy,
    budget: BudgetFacts,
    instances: list[InstanceFacts],
    now: datetime,
) -> Entitlement:
    reasons: list[str] = []
    banner: str | None = None
    holds = set(account.suspension_reasons)
    terminated = False  # by the dunning policy, now

    if account.status == "terminated":
        level = Level.deleted
        reasons.append("account terminated")
    else:
        level, why = _subscription_level(subscriptions, policy, now)
        if why:
            reasons.append(why)

        if account.past_due_since is not None:
            if now - account.past_due_since >= policy.grace:
                holds.add("billing")
                ends = policy.terminates_at(account.past_due_since)
                terminated = ends is not None and now >= ends
            else:
                due = account.past_due_since + policy.grace
                banner = f"Payment is past due; services will be suspended on {due:%Y-%m-%d %H:%M} UTC"

        contract_ends = account.contract_ends_at
        contract_ended = contract_ends is not None and now >= contract_ends
        if contract_ended:
            holds.add("contract")
        elif contract_ends is not None and contract_ends - now <= CONTRACT_END_NOTICE and banner is None:
            banner = (f"The contract ends on {contract_ends:%Y-%m-%d %H:%M} UTC; services stop then unless it is "
                      "extended")

        percent = budget.percent
        if percent is not None and percent >= BUDGET_SUSPEND_PERCENT:
            holds.add("budget")
        elif percent is not None and percent >= BUDGET_THROTTLE_PERCENT and level > Level.throttled:
            level = Level.throttled
            reasons.append(f"monthly budget reached ({percent}%)")

        if holds and level > Level.stopped:
            level = Level.stopped
        for hold in sorted(holds):
            reasons.append(f"suspended: {hold}")
        if holds:
            banner = "Services are suspended (" + ", ".join(sorted(holds)) + ")"
            if contract_ended:
                banner = f"The contract ended on {contract_ends:%Y-%m-%d %H:%M} UTC. {banner}"
        if terminated:  # unpaid past the policy's retention: irreversible, and only where the policy allows it
            level = Level.deleted
            reasons.append("terminated: unpaid beyond the dunning policy's retention")
            banner = "The account was terminated for non-payment"

    if level == Level.deleted:
        access = Access.none
    elif holds or account.status == "cancelled":
        access = Access.read_only  # they can see and pay, not order
    else:
        access = Access.full

    quotas = sum((s.quotas for s in subscriptions if s.entitles_at(now)), Quotas())
    per_instance = {}
    for instance in instances:
        if instance.delete_requested_at is not None and instance.delete_requested_at <= now:
            per_instance[instance.id] = InstanceEntitlement(Level.deleted, ("deletion requested",))
        else:
            per_instance[instance.id] = InstanceEntitlement(level, tuple(reasons))
    status = _account_status(account, frozenset(holds), any(s.entitles_at(now) for s in subscriptions),
                             terminated=terminated)
    return Entitlement(level, tuple(reasons), access, banner, quotas, per_instance, frozenset(holds), status)


def _account_status(account: AccountFacts, holds: frozenset[str], entitled: bool, *, terminated: bool) -> str:
    """pending → active → past_due → suspended → active, or terminated when the dunning policy's retention ran
    out; cancelled and terminated are otherwise set by their own facts."""
    if account.status in {"cancelled", "terminated"}:
        return account.status
    if terminated:
        return "terminated"
    if holds:
        return "suspended"
    if account.past_due_since is not None:
        return "past_due"
    if account.status == "pending" and not entitled:
        return "pending"
    return "active"


def next_change(
    account: AccountFacts,
    subscriptions: list[SubscriptionFacts],
    policy: DunningPolicy,
    instances: list[InstanceFacts],
    now: datetime,
) -> datetime | None:
    """The next instant after `now` at which the passage of time alone may change the decision: a period
    starting or ending, an expiry's retention running out, a past-due grace ending, a scheduled deletion, a
    contract ending. (The contract's notice only changes the banner, which is read, not applied.)"""
    candidates: list[datetime] = []
    for subscription in subscriptions:
        if subscription.status == "pending":
            continue
        ended = subscription.ended_at()
        candidates += [subscription.period_start, ended, ended + policy.expired_retention]
    if account.past_due_since is not None:
        candidates += [stage.at for stage in policy.stages(account.past_due_since)]  # the grace's end among them
        if (ends := policy.terminates_at(account.past_due_since)) is not None:
            candidates.append(ends)
    if account.contract_ends_at is not None:
        candidates.append(account.contract_ends_at)
    candidates += [i.delete_requested_at for i in instances if i.delete_requested_at is not None]
    future = [moment for moment in candidates if moment > now]
    return min(future) if future else None
