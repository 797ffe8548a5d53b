"""Entitlement: a pure function of billing facts and time. No I/O, no clock reads (DESIGN §2)."""

from jushostit.entitlement.decide import (
    Access,
    AccountFacts,
    BudgetFacts,
    DunningPolicy,
    DunningStage,
    Entitlement,
    InstanceEntitlement,
    InstanceFacts,
    Level,
    Quotas,
    SubscriptionFacts,
    current_dunning_stage,
    entitlement,
    next_change,
)

__all__ = [
    "Access",
    "AccountFacts",
    "BudgetFacts",
    "DunningPolicy",
    "DunningStage",
    "Entitlement",
    "InstanceEntitlement",
    "InstanceFacts",
    "Level",
    "Quotas",
    "SubscriptionFacts",
    "current_dunning_stage",
    "entitlement",
    "next_change",
]
