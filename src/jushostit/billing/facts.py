"""The inputs of the pure `entitlement(...)` decision, loaded for one account.

The conversions (`subscription_facts`, `account_facts`, `instance_facts`, ...) are pure, so the reconciler can
build the same facts from rows it loaded itself; `load_entitlement_inputs` is the one loader for a single
account (instances and accounts use it; nobody else builds entitlement inputs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

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
from jushostit.models import Account, BillingMode, Instance
from jushostit.models.rows import AccountFactsRow, PlanFactsRow, SubscriptionFactsRow

DEFAULT_EXPIRED_RETENTION_DAYS = 30

# Days past due before the `billing` hold applies, per billing mode (DESIGN §3). Prepaid accounts are never
# suspended for being past due (an admin or the contract end does that), hence the century.
DUNNING_GRACE_DAYS: dict[BillingMode, int] = {
    BillingMode.card: 7,
    BillingMode.invoice: 14,
    BillingMode.prepaid: 36_500,
    BillingMode.free: 7,
}


def dunning_policy(
    billing_mode: BillingMode, *, expired_retention_days: int = DEFAULT_EXPIRED_RETENTION_DAYS
) -> DunningPolicy:
    return DunningPolicy(
        grace=timedelta(days=DUNNING_GRACE_DAYS[billing_mode]),
        expired_retention=timedelta(days=expired_retention_days),
    )


def plan_quotas(plan: PlanFactsRow) -> Quotas:
    q = plan.quotas
    return Quotas(
        cpu_millicores=int(q.get("cpu_millicores", 0)),
        memory_mib=int(q.get("memory_mib", 0)),
        storage_gib=int(q.get("storage_gib", 0)),
        max_instances=int(q.get("max_instances", 0)),
    )


def subscription_facts(subscription: SubscriptionFactsRow, plan: PlanFactsRow) -> SubscriptionFacts:
    return SubscriptionFacts(
        id=subscription.id,
        plan_code=plan.code,
        status=subscription.status,
        period_start=subscription.current_period_start,
        period_end=subscription.current_period_end,
        quotas=plan_quotas(plan),
        cancelled_at=subscription.cancelled_at,
    )


def account_facts(account: AccountFactsRow) -> AccountFacts:
    return AccountFacts(
        status=account.status.value,
        suspension_reasons=frozenset(account.suspension_reasons),
        past_due_since=account.past_due_since,
    )


def budget_facts(account: AccountFactsRow) -> BudgetFacts:
    return BudgetFacts(limit_minor=account.budget_minor, spent_minor=account.month_spend_minor)


def instance_facts(instances: Iterable[Instance]) -> list[InstanceFacts]:
    return [InstanceFacts(i.id, i.delete_requested_at) for i in instances]


@dataclass(frozen=True)
class EntitlementInputs:
    account: AccountFacts
    subscriptions: list[SubscriptionFacts]
    policy: DunningPolicy
    budget: BudgetFacts

    def decide(self, now: datetime, instances: Iterable[InstanceFacts] = ()) -> Entitlement:
        return entitlement(self.account, self.subscriptions, self.policy, self.budget, list(instances), now)

    def next_change(self, now: datetime, instances: Iterable[InstanceFacts] = ()) -> datetime | None:
        return next_change(self.account, self.subscriptions, self.policy, list(instances), now)


def entitlement_inputs(
    account: AccountFactsRow,
    subscriptions: Iterable[tuple[SubscriptionFactsRow, PlanFactsRow]],
    *,
    expired_retention_days: int = DEFAULT_EXPIRED_RETENTION_DAYS,
) -> EntitlementInputs:
    return EntitlementInputs(
        account=account_facts(account),
        subscriptions=[subscription_facts(s, p) for s, p in subscriptions],
        policy=dunning_policy(account.billing_mode, expired_retention_days=expired_retention_days),
        budget=budget_facts(account),
    )


async def load_entitlement_inputs(
    session: AsyncSession, account: Account, *, expired_retention_days: int = DEFAULT_EXPIRED_RETENTION_DAYS
) -> EntitlementInputs:
    subscriptions = await BillingRepository(session).all_of(account.id)
    return entitlement_inputs(account, subscriptions, expired_retention_days=expired_retention_days)
