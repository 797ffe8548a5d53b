"""A prepaid contract's end in the pure decision: from that instant the account is held (`contract`), stopped and
read-only, with a banner saying the contract ended; two weeks before, the banner announces it; and the end is
one of the instants the reconciler must wake at."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from jushostit.entitlement import (
    AccountFacts,
    BudgetFacts,
    DunningPolicy,
    InstanceFacts,
    Level,
    Quotas,
    SubscriptionFacts,
    next_change,
)
from jushostit.entitlement import entitlement as decide

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
ENDS = NOW + timedelta(days=20)
INSTANCE = uuid.UUID(int=1)
RUNNING = SubscriptionFacts(uuid.UUID(int=7), "starter", "active", NOW - timedelta(days=1), NOW + timedelta(days=29),
                            Quotas(max_instances=3))


def at(now: datetime, account: AccountFacts):
    return decide(account, [RUNNING], DunningPolicy(), BudgetFacts(), [InstanceFacts(INSTANCE)], now)


def test_a_contract_in_force_changes_nothing() -> None:
    entitled = at(NOW, AccountFacts("active", contract_ends_at=ENDS))
    assert (entitled.level, entitled.holds, entitled.warning_banner) == (Level.running, frozenset(), None)
    assert entitled.account_status == "active"


def test_the_contract_end_holds_the_account_from_that_very_instant() -> None:
    account = AccountFacts("active", contract_ends_at=ENDS)
    assert at(ENDS - timedelta(microseconds=1), account).level == Level.running
    entitled = at(ENDS, account)
    assert entitled.level == Level.stopped and entitled.holds == frozenset({"contract"})
    assert entitled.instances[INSTANCE].level == Level.stopped
    assert entitled.access.value == "read_only" and entitled.account_status == "suspended"
    assert "suspended: contract" in entitled.reasons
    assert entitled.warning_banner == "The contract ended on 2026-12-11 12:00 UTC. Services are suspended (contract)"


def test_the_contract_end_adds_to_the_other_holds() -> None:
    entitled = at(ENDS + timedelta(days=1), AccountFacts("suspended", frozenset({"admin"}), contract_ends_at=ENDS))
    assert entitled.holds == frozenset({"admin", "contract"})
    assert entitled.warning_banner == (
        "The contract ended on 2026-12-11 12:00 UTC. Services are suspended (admin, contract)")


def test_the_banner_announces_the_end_two_weeks_before_unless_a_payment_is_overdue() -> None:
    account = AccountFacts("active", contract_ends_at=ENDS)
    assert at(ENDS - timedelta(days=14, seconds=1), account).warning_banner is None
    notice = at(ENDS - timedelta(days=14), account)
    assert notice.level == Level.running and notice.holds == frozenset()
    assert notice.warning_banner == (
        "The contract ends on 2026-12-11 12:00 UTC; services stop then unless it is extended")
    overdue = AccountFacts("past_due", past_due_since=NOW - timedelta(days=1), contract_ends_at=ENDS)
    assert at(NOW, overdue).warning_banner.startswith("Payment is past due")


def test_the_reconciler_wakes_at_the_contract_end() -> None:
    account = AccountFacts("active", contract_ends_at=ENDS)
    assert next_change(account, [RUNNING], DunningPolicy(), [], NOW) == ENDS  # before the period's end
    # Once it has passed, the next change is the period's end again.
    assert next_change(account, [RUNNING], DunningPolicy(), [], ENDS) == RUNNING.period_end
    assert next_change(AccountFacts("active"), [RUNNING], DunningPolicy(), [], NOW) == RUNNING.period_end
