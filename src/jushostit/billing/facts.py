"""The inputs of the pure `entitlement(...)` decision, loaded for one account.

The conversions (`subscription_facts`, `account_facts`, `instance_facts`, ...) are pure, so the reconciler can
build the same facts from rows it loaded itself; `load_entitlement_inputs` is the one loader for a single
account (instances and accounts use it; nobody else builds entitlement inputs).

An open invoice past its due date makes the account past due from that date: the decision sees the account past
due since the earlier of its own `past_due_since` and the due date of its oldest open invoice, once that date has
come (`EntitlementInputs.account_at`), and the due date itself is one of the instants time changes the decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.billing.periods import as_instant, month_of, next_month
from jushostit.billing.repository import BillingRepository
from jushostit.entitlement import (
    AccountFacts,
    BudgetFacts,
    DunningPolicy,
    Entitlement,
    InstanceFacts,
    Quotas,
    SubscriptionFacts,
    entitlement,
    next_change,
)
from jushostit.kit.schemas import iso_duration
from jushostit.models import Account, BillingMode, Instance
from jushostit.models.rows import AccountFactsRow, PlanFactsRow, SubscriptionFactsRow

DEFAULT_EXPIRED_RETENTION_DAYS = 30

# Per billing mode (DESIGN §3). Prepaid accounts are never suspended for being past due (an admin or the contract
# end does that), hence the century; invoices are due 14 days after their due date before the hold.
DEFAULT_DUNNING: dict[BillingMode, DunningPolicy] = {
    BillingMode.card: DunningPolicy(grace=timedelta(days=7), terminate_after=timedelta(days=30),
                                    reminders=(timedelta(days=1), timedelta(days=3), timedelta(days=6))),
    BillingMode.invoice: DunningPolicy(grace=timedelta(days=14)),
    BillingMode.prepaid: DunningPolicy(grace=timedelta(days=36_500)),
    BillingMode.free: DunningPolicy(grace=timedelta(days=7)),
}
DUNNING_FIELDS = ("grace", "reminders", "terminate_after")
_DURATION: TypeAdapter[timedelta] = TypeAdapter(timedelta)


def effective_dunning(
    billing_mode: BillingMode, overrides: Mapping[str, Any] | None, *,
    expired_retention_days: int = DEFAULT_EXPIRED_RETENTION_DAYS,
) -> tuple[DunningPolicy, dict[str, str]]:
    """The account's policy: its overrides (ISO 8601 durations, as stored) over its billing mode's defaults, and
    where each value comes from (`account`, or `default:<billing mode>`)."""
    default = DEFAULT_DUNNING[billing_mode]
    overrides = overrides or {}
    grace = _DURATION.validate_python(overrides["grace"]) if "grace" in overrides else default.grace
    reminders = (tuple(_DURATION.validate_python(r) for r in overrides["reminders"])
                 if "reminders" in overrides else default.reminders)
    terminate_after = default.terminate_after
    if "terminate_after" in overrides:
        stored = overrides["terminate_after"]
        terminate_after = None if stored is None else _DURATION.validate_python(stored)
    sources = {name: "account" if name in overrides else f"default:{billing_mode.value}" for name in DUNNING_FIELDS}
    policy = DunningPolicy(grace=grace, expired_retention=timedelta(days=expired_retention_days),
                           terminate_after=terminate_after, reminders=reminders)
    return policy, sources


def stored_durations(values: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides as stored: ISO 8601 strings (a list for `reminders`, null for a `terminate_after` of never)."""
    def text(value: Any) -> Any:
        if isinstance(value, timedelta):
            return iso_duration(value)
        return [text(item) for item in value] if isinstance(value, list | tuple) else value

    return {name: text(value) for name, value in values.items()}


def dunning_policy(
    billing_mode: BillingMode, *, overrides: Mapping[str, Any] | None = None,
    expired_retention_days: int = DEFAULT_EXPIRED_RETENTION_DAYS,
) -> DunningPolicy:
    return effective_dunning(billing_mode, overrides, expired_retention_days=expired_retention_days)[0]


def plan_quotas(plan: PlanFactsRow | SubscriptionFactsRow) -> Quotas:
    """The quotas a plan grants, or those a subscription was sold with."""
    q = plan.quotas
    return Quotas(
        cpu_millicores=int(q.get("cpu_millicores", 0)),
        memory_mib=int(q.get("memory_mib", 0)),
        storage_gib=int(q.get("storage_gib", 0)),
        max_instances=int(q.get("max_instances", 0)),
        concurrent_sessions=int(q.get("concurrent_sessions", 0)),
        session_max_minutes=int(q.get("session_max_minutes", 0)),
    )


def subscription_facts(subscription: SubscriptionFactsRow, plan: PlanFactsRow) -> SubscriptionFacts:
    return SubscriptionFacts(
        id=subscription.id,
        plan_code=plan.code,
        status=subscription.status,
        period_start=subscription.current_period_start,
        period_end=subscription.current_period_end,
        quotas=plan_quotas(subscription),  # the version it was sold, not the plan as edited since
        cancelled_at=subscription.cancelled_at,
    )


def account_facts(account: AccountFactsRow) -> AccountFacts:
    return AccountFacts(
        status=account.status.value,
        suspension_reasons=frozenset(account.suspension_reasons),
        past_due_since=account.past_due_since,
        # A contract pays only while the account is prepaid: one moved to another billing mode pays that way.
        contract_ends_at=account.contract_ends_at if account.billing_mode == BillingMode.prepaid else None,
    )


def budget_facts(account: AccountFactsRow, month_spend_minor: int, now: datetime) -> BudgetFacts:
    """The budget against this month's usage charges; it resets at the next month's start."""
    return BudgetFacts(limit_minor=account.budget_minor, spent_minor=month_spend_minor,
                       resets_at=as_instant(next_month(month_of(now))))


def instance_facts(instances: Iterable[Instance]) -> list[InstanceFacts]:
    return [InstanceFacts(i.id, i.delete_requested_at) for i in instances]


@dataclass(frozen=True)
class EntitlementInputs:
    account: AccountFacts
    subscriptions: list[SubscriptionFacts]
    policy: DunningPolicy
    budget: BudgetFacts
    invoice_due_at: datetime | None  # the due date of the account's oldest open invoice

    def account_at(self, now: datetime) -> AccountFacts:
        """The account's facts at `now`: past due since the earlier of its own past-due instant and its oldest
        open invoice's due date, once that date has come."""
        due = self.invoice_due_at
        if due is None or due > now:
            return self.account
        since = self.account.past_due_since
        return replace(self.account, past_due_since=due if since is None else min(since, due))

    def decide(self, now: datetime, instances: Iterable[InstanceFacts] = ()) -> Entitlement:
        return entitlement(self.account_at(now), self.subscriptions, self.policy, self.budget, list(instances), now)

    def next_change(self, now: datetime, instances: Iterable[InstanceFacts] = ()) -> datetime | None:
        """The next instant time alone may change the decision; an invoice falling due is one (the account is past
        due from then on, and the grace's end follows from it), and so is a new month for an account its budget
        holds back."""
        changes = (next_change(self.account_at(now), self.subscriptions, self.policy, list(instances), now),
                   self.invoice_due_at, self.budget.resets_at if self.budget.holds_back else None)
        return min((moment for moment in changes if moment is not None and moment > now), default=None)


def entitlement_inputs(
    account: AccountFactsRow,
    subscriptions: Iterable[tuple[SubscriptionFactsRow, PlanFactsRow]],
    *,
    invoice_due_at: datetime | None,
    month_spend_minor: int,
    now: datetime,
    expired_retention_days: int = DEFAULT_EXPIRED_RETENTION_DAYS,
) -> EntitlementInputs:
    """The facts of an account, with its usage charges of the month `now` is in (what its budget holds)."""
    return EntitlementInputs(
        account=account_facts(account),
        subscriptions=[subscription_facts(s, p) for s, p in subscriptions],
        policy=dunning_policy(account.billing_mode, overrides=account.dunning_policy,
                              expired_retention_days=expired_retention_days),
        budget=budget_facts(account, month_spend_minor, now),
        invoice_due_at=invoice_due_at,
    )


async def load_entitlement_inputs(
    session: AsyncSession, account: Account, *, now: datetime,
    expired_retention_days: int = DEFAULT_EXPIRED_RETENTION_DAYS,
) -> EntitlementInputs:
    repository = BillingRepository(session)
    subscriptions = await repository.all_of(account.id)
    invoice_due_at = await repository.oldest_open_invoice_due(account.id)
    return entitlement_inputs(account, subscriptions, invoice_due_at=invoice_due_at,
                              month_spend_minor=await repository.month_spend(account.id, now), now=now,
                              expired_retention_days=expired_retention_days)
