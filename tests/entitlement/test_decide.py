"""Table tests and properties of the pure entitlement decision."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jushostit.entitlement import (
    Access,
    AccountFacts,
    BudgetFacts,
    DunningPolicy,
    InstanceEntitlement,
    InstanceFacts,
    Level,
    Quotas,
    SubscriptionFacts,
    current_dunning_stage,
    entitlement,
    next_change,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
POLICY = DunningPolicy()
STARTER = Quotas(cpu_millicores=1000, memory_mib=1024, storage_gib=5, max_instances=2)
I1, I2 = uuid.UUID(int=1), uuid.UUID(int=2)


def sub(start_days: float = -1, end_days: float = 29, status: str = "active", cancelled_days: float | None = None,
        quotas: Quotas = STARTER) -> SubscriptionFacts:
    return SubscriptionFacts(
        id=uuid.uuid4(),
        plan_code="starter",
        status=status,
        period_start=NOW + timedelta(days=start_days),
        period_end=NOW + timedelta(days=end_days),
        quotas=quotas,
        cancelled_at=NOW + timedelta(days=cancelled_days) if cancelled_days is not None else None,
    )


def decide(account=AccountFacts("active"), subs=None, budget=BudgetFacts(), instances=(InstanceFacts(I1),),
           now=NOW):
    return entitlement(account, [sub()] if subs is None else subs, POLICY, budget, list(instances), now)


@pytest.mark.parametrize(
    ("account", "subs", "budget", "level", "access", "banner"),
    [
        (AccountFacts("active"), None, BudgetFacts(), Level.running, Access.full, False),
        (AccountFacts("pending"), [], BudgetFacts(), Level.stopped, Access.full, False),
        (AccountFacts("pending"), [sub(status="pending")], BudgetFacts(), Level.stopped, Access.full, False),
        (AccountFacts("active", frozenset({"admin"})), None, BudgetFacts(), Level.stopped, Access.read_only, True),
        (AccountFacts("active", frozenset({"abuse"})), None, BudgetFacts(), Level.stopped, Access.read_only, True),
        (AccountFacts("active", frozenset({"billing"})), None, BudgetFacts(), Level.stopped, Access.read_only, True),
        (AccountFacts("past_due", past_due_since=NOW - timedelta(days=2)), None, BudgetFacts(), Level.running,
         Access.full, True),
        (AccountFacts("past_due", past_due_since=NOW - timedelta(days=7)), None, BudgetFacts(), Level.stopped,
         Access.read_only, True),
        (AccountFacts("active"), None, BudgetFacts(10_000, 9_999), Level.running, Access.full, False),
        (AccountFacts("active"), None, BudgetFacts(10_000, 10_000), Level.throttled, Access.full, False),
        (AccountFacts("active"), None, BudgetFacts(10_000, 11_999), Level.throttled, Access.full, False),
        (AccountFacts("active"), None, BudgetFacts(10_000, 12_000), Level.stopped, Access.read_only, True),
        (AccountFacts("active"), [sub(-31, -1)], BudgetFacts(), Level.expired, Access.full, False),
        (AccountFacts("active"), [sub(-61, -31)], BudgetFacts(), Level.deleted, Access.none, False),
        (AccountFacts("active"), [sub(cancelled_days=-0.5)], BudgetFacts(), Level.expired, Access.full, False),
        (AccountFacts("cancelled"), [sub(-31, -1)], BudgetFacts(), Level.expired, Access.read_only, False),
        (AccountFacts("terminated"), None, BudgetFacts(), Level.deleted, Access.none, False),
        (AccountFacts("active", frozenset({"admin"})), [sub(-31, -1)], BudgetFacts(), Level.expired,
         Access.read_only, True),
    ],
)
def test_table(account, subs, budget, level, access, banner) -> None:
    result = decide(account, subs, budget)
    assert result.level == level
    assert result.access == access
    assert (result.warning_banner is not None) == banner
    assert result.instances[I1].level == level
    assert result.reasons or level == Level.running


def test_payment_lifts_only_billing() -> None:
    both = decide(AccountFacts("active", frozenset({"billing", "admin"})))
    assert both.level == Level.stopped and both.holds == {"billing", "admin"}
    admin_only = decide(AccountFacts("active", frozenset({"admin"})))
    assert admin_only.level == Level.stopped and "suspended: admin" in admin_only.reasons


def test_quotas_add_up_over_active_subscriptions_only() -> None:
    result = decide(subs=[sub(), sub(), sub(-40, -10)])
    assert result.quotas == STARTER + STARTER


def test_deletion_requested_in_the_future_keeps_running_until_then() -> None:
    later = InstanceFacts(I1, delete_requested_at=NOW + timedelta(days=3))
    now_ = InstanceFacts(I2, delete_requested_at=NOW)
    result = decide(instances=(later, now_))
    assert result.instances[I1].level == Level.running
    assert result.instances[I2].level == Level.deleted


@pytest.mark.parametrize(
    ("account", "subs", "budget", "status"),
    [
        (AccountFacts("pending"), [], BudgetFacts(), "pending"),
        (AccountFacts("pending"), [sub(status="pending")], BudgetFacts(), "pending"),
        (AccountFacts("pending"), None, BudgetFacts(), "active"),  # the first period started
        (AccountFacts("active"), [], BudgetFacts(), "active"),
        (AccountFacts("active", past_due_since=NOW - timedelta(days=2)), None, BudgetFacts(), "past_due"),
        (AccountFacts("past_due", past_due_since=NOW - timedelta(days=7)), None, BudgetFacts(), "suspended"),
        (AccountFacts("active", frozenset({"admin"})), None, BudgetFacts(), "suspended"),
        (AccountFacts("active"), None, BudgetFacts(10_000, 12_000), "suspended"),
        (AccountFacts("suspended"), None, BudgetFacts(), "active"),  # every hold lifted
        (AccountFacts("cancelled", frozenset({"admin"})), None, BudgetFacts(), "cancelled"),
        (AccountFacts("terminated", past_due_since=NOW - timedelta(days=9)), None, BudgetFacts(), "terminated"),
    ],
)
def test_the_account_status_follows_from_the_facts(account, subs, budget, status) -> None:
    assert decide(account, subs, budget).account_status == status


@pytest.mark.parametrize(
    ("account", "subs", "budget", "reasons"),
    [
        (AccountFacts("terminated"), None, BudgetFacts(), ("account terminated",)),
        (AccountFacts("active"), [], BudgetFacts(), ("no active subscription",)),
        (AccountFacts("active"), [sub(-31, -1)], BudgetFacts(), ("subscription ended",)),
        (AccountFacts("active"), [sub(-61, -31)], BudgetFacts(),
         ("subscription ended and the retention period is over",)),
        (AccountFacts("active"), None, BudgetFacts(10_000, 10_500), ("monthly budget reached (105%)",)),
        (AccountFacts("active", frozenset({"admin"}), NOW - timedelta(days=8)), None, BudgetFacts(10_000, 13_000),
         ("suspended: admin", "suspended: billing", "suspended: budget")),
    ],
)
def test_every_reason_is_named(account, subs, budget, reasons) -> None:
    result = decide(account, subs, budget)
    assert result.reasons == reasons and result.instances[I1].reasons == reasons


def test_the_banner_names_the_holds_or_the_day_services_will_be_suspended() -> None:
    held = decide(AccountFacts("active", frozenset({"admin"}), NOW - timedelta(days=8)))
    assert held.warning_banner == "Services are suspended (admin, billing)"
    assert held.holds == {"admin", "billing"}
    assert decide(budget=BudgetFacts(10_000, 12_000)).holds == {"budget"}
    due = decide(AccountFacts("past_due", past_due_since=NOW - timedelta(days=2)))
    assert due.warning_banner == "Payment is past due; services will be suspended on 2026-11-26 12:00 UTC"


def test_a_deletion_is_named_as_requested() -> None:
    result = decide(instances=(InstanceFacts(I1, delete_requested_at=NOW),))
    assert result.instances[I1] == InstanceEntitlement(Level.deleted, ("deletion requested",))


def test_quotas_are_summed_field_by_field() -> None:
    other = Quotas(cpu_millicores=1, memory_mib=2, storage_gib=3, max_instances=4)
    assert STARTER + other == Quotas(cpu_millicores=1001, memory_mib=1026, storage_gib=8, max_instances=6)


def test_the_data_is_deleted_from_the_instant_the_retention_ends() -> None:
    ended = sub(-60, -30)  # ended 30 days ago: the retention (30 days) ends now
    assert decide(subs=[ended]).level == Level.deleted
    assert decide(subs=[ended], now=NOW - timedelta(microseconds=1)).level == Level.expired


def test_a_deadline_at_now_is_not_the_next_change() -> None:
    assert next_change(AccountFacts("active"), [sub(0, 29)], POLICY, [], NOW) == NOW + timedelta(days=29)


# --- properties -----------------------------------------------------------------------------------------------

reasons = st.frozensets(st.sampled_from(["billing", "budget", "admin", "abuse", "contract"]))
statuses = st.sampled_from(["pending", "active", "past_due", "cancelled"])
offsets = st.floats(min_value=-90, max_value=90, allow_nan=False)
subscriptions = st.lists(
    st.builds(
        lambda start, length, status, cancel: sub(start, start + length, status, cancel),
        offsets,
        st.floats(min_value=0.01, max_value=60),
        st.sampled_from(["active", "cancelled", "pending"]),
        st.none() | offsets,
    ),
    max_size=3,
)
past_due = st.none() | st.builds(lambda d: NOW - timedelta(days=d), st.floats(min_value=0, max_value=30))
budgets = st.builds(BudgetFacts, st.none() | st.integers(1, 10**6), st.integers(0, 2 * 10**6))


@given(statuses, reasons, past_due, subscriptions, budgets, st.sampled_from(["admin", "abuse", "contract"]))
def test_any_admin_hold_means_nothing_runs(status, held, due, subs, budget, admin_hold) -> None:
    result = decide(AccountFacts(status, held | {admin_hold}, due), subs, budget, (InstanceFacts(I1), InstanceFacts(I2)))
    assert result.level <= Level.stopped
    assert all(i.level <= Level.stopped for i in result.instances.values())


@given(statuses, reasons, past_due, subscriptions, budgets, st.integers(0, 10**6))
def test_raising_spend_never_raises_the_level(status, held, due, subs, budget, extra) -> None:
    account = AccountFacts(status, held, due)
    more = BudgetFacts(budget.limit_minor, budget.spent_minor + extra)
    assert decide(account, subs, more).level <= decide(account, subs, budget).level


@given(statuses, reasons, past_due, subscriptions, budgets, st.sampled_from(["billing", "budget", "admin", "abuse", "contract"]))
def test_removing_a_hold_never_lowers_the_level(status, held, due, subs, budget, hold) -> None:
    with_hold = decide(AccountFacts(status, held | {hold}, due), subs, budget)
    without = decide(AccountFacts(status, held - {hold}, due), subs, budget)
    assert without.level >= with_hold.level


@given(subscriptions, st.integers(0, 99))
def test_paid_in_budget_without_holds_runs(other_subs, percent) -> None:
    result = decide(AccountFacts("active"), [sub(), *other_subs], BudgetFacts(10_000, percent * 100))
    assert result.level == Level.running and result.access == Access.full
    assert result.instances[I1].level == Level.running


@given(subscriptions, st.floats(min_value=-60, max_value=-0.01))
def test_one_subscription_ending_never_stops_what_another_entitles(other_subs, ended_days_ago) -> None:
    ended = sub(ended_days_ago - 30, ended_days_ago)
    result = decide(AccountFacts("active"), [ended, sub(), *other_subs])
    assert result.instances[I1].level == Level.running


# --- the next instant time alone changes the decision -------------------------------------------------------


def test_next_change_is_the_earliest_future_deadline() -> None:
    subs = [sub(-1, 29), sub(-40, -10)]
    due = AccountFacts("past_due", past_due_since=NOW - timedelta(days=2))
    later_delete = InstanceFacts(I1, delete_requested_at=NOW + timedelta(days=1))
    # the suspension warning (4 days) < past-due grace (5 days) < ended sub's retention end (20 days) < period end
    # (29 days), and the deletion (1 day)
    assert next_change(due, subs, POLICY, [later_delete], NOW) == NOW + timedelta(days=1)
    assert next_change(due, subs, POLICY, [], NOW) == NOW + timedelta(days=4)
    assert next_change(due, subs, POLICY, [], NOW + timedelta(days=4)) == NOW + timedelta(days=5)
    assert next_change(AccountFacts("active"), subs, POLICY, [], NOW) == NOW + timedelta(days=20)
    assert next_change(AccountFacts("active"), [sub(-1, 29, status="pending")], POLICY, [], NOW) is None


@given(statuses, reasons, past_due, subscriptions, budgets)
def test_nothing_changes_before_next_change(status, held, due, subs, budget) -> None:
    account = AccountFacts(status, held, due)
    moment = next_change(account, subs, POLICY, [], NOW)
    horizon = moment - timedelta(microseconds=1) if moment else NOW + timedelta(days=365)
    before = decide(account, subs, budget, now=NOW)
    just_before = decide(account, subs, budget, now=max(NOW, horizon))
    assert just_before.level == before.level


def test_an_account_unpaid_past_grace_and_retention_is_terminated_only_where_the_policy_allows_it() -> None:
    terminating = DunningPolicy(grace=timedelta(days=7), terminate_after=timedelta(days=30))
    since = NOW - timedelta(days=37)

    def decided(policy: DunningPolicy, past_due_since: datetime, now: datetime = NOW):
        return entitlement(AccountFacts("past_due", past_due_since=past_due_since), [sub()], policy, BudgetFacts(),
                           [InstanceFacts(I1)], now)

    ended = decided(terminating, since)
    assert (ended.level, ended.access, ended.account_status) == (Level.deleted, Access.none, "terminated")
    assert ended.instances[I1].level == Level.deleted and "billing" in ended.holds
    still = decided(terminating, since + timedelta(seconds=1))  # a second short of grace + retention
    assert (still.level, still.account_status) == (Level.stopped, "suspended")
    never = decided(DunningPolicy(grace=timedelta(days=7), terminate_after=None), NOW - timedelta(days=3650))
    assert (never.level, never.account_status) == (Level.stopped, "suspended")
    # The instant it happens is a deadline the reconciler schedules.
    after_grace = since + timedelta(days=7, seconds=1)
    assert next_change(AccountFacts("past_due", past_due_since=since), [], terminating, [], after_grace) == (
        since + timedelta(days=37))


CARD = DunningPolicy(grace=timedelta(days=7), reminders=(timedelta(days=1), timedelta(days=3), timedelta(days=6)))


def test_the_stages_of_a_past_due_episode_end_in_the_suspension_with_a_warning_a_day_before() -> None:
    stages = [(s.kind, s.step, s.at - NOW) for s in CARD.stages(NOW)]
    assert stages == [("payment_failed", 0, timedelta(0)), ("reminder", 1, timedelta(days=1)),
                      ("reminder", 2, timedelta(days=3)),  # the reminder at 6 days is the warning's day: left to it
                      ("suspension_warning", 0, timedelta(days=6)), ("suspended", 0, timedelta(days=7))]
    short = DunningPolicy(grace=timedelta(seconds=5), reminders=(timedelta(seconds=2),))
    assert [(s.kind, s.step) for s in short.stages(NOW)] == [("payment_failed", 0), ("reminder", 1), ("suspended", 0)]


def test_the_current_stage_is_the_latest_reached_and_the_reconciler_wakes_at_each() -> None:
    assert current_dunning_stage(None, CARD, NOW) is None
    assert current_dunning_stage(NOW, CARD, NOW + timedelta(hours=23)).kind == "payment_failed"
    reminder = current_dunning_stage(NOW, CARD, NOW + timedelta(days=4))
    assert (reminder.kind, reminder.step) == ("reminder", 2)
    assert current_dunning_stage(NOW, CARD, NOW + timedelta(days=30)).kind == "suspended"
    account = AccountFacts(status="past_due", past_due_since=NOW)
    wakes, moment = [], NOW
    while (moment := next_change(account, [sub(end_days=60)], CARD, [], moment)) and moment < NOW + timedelta(days=8):
        wakes.append(moment - NOW)
    assert wakes == [timedelta(days=1), timedelta(days=3), timedelta(days=6), timedelta(days=7)]
