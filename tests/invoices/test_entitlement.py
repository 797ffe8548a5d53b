"""An open invoice past its due date makes its account past due from that date; past the dunning policy's grace
(14 days for accounts billed `invoice`) the account is suspended with reason `billing` and its services stopped;
paying (or voiding) the invoice restores them. Seen in the facts (pure), through `GET /v1/accounts/{id}`, and
through the reconciler on real instances."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import time_machine
from sqlalchemy import select

from jushostit.billing.facts import EntitlementInputs
from jushostit.entitlement import AccountFacts, BudgetFacts, DunningPolicy, Level, Quotas, SubscriptionFacts
from jushostit.models import AuditEntry, BillingMode
from tests.billing.helpers import login, paid_subscription
from tests.invoices.helpers import issue
from tests.live import Live

DUE = datetime(2031, 5, 1, 9, 0, tzinfo=UTC)
GRACE = timedelta(days=14)


def inputs(invoice_due_at: datetime | None, past_due_since: datetime | None = None) -> EntitlementInputs:
    running = SubscriptionFacts(uuid.uuid4(), "starter", "active", DUE - timedelta(days=20), DUE + timedelta(days=40),
                                Quotas(max_instances=3))
    return EntitlementInputs(AccountFacts("active", past_due_since=past_due_since), [running],
                             DunningPolicy(grace=GRACE), BudgetFacts(), invoice_due_at)


def test_an_open_invoice_is_past_due_from_its_due_date_and_suspends_when_the_grace_runs_out() -> None:
    facts = inputs(DUE)
    before = facts.decide(DUE - timedelta(seconds=1))
    assert (before.level, before.account_status, before.warning_banner) == (Level.running, "active", None)
    overdue = facts.decide(DUE + timedelta(days=1))
    assert (overdue.level, overdue.account_status) == (Level.running, "past_due")
    assert overdue.warning_banner == "Payment is past due; services will be suspended on 2031-05-15 09:00 UTC"
    suspended = facts.decide(DUE + GRACE)
    assert (suspended.level, suspended.account_status, suspended.holds) == (Level.stopped, "suspended",
                                                                            frozenset({"billing"}))
    assert suspended.reasons == ("suspended: billing",)
    assert inputs(None).decide(DUE + GRACE).level == Level.running  # paid or void: nothing is owed


def test_the_reconciler_wakes_when_the_invoice_falls_due_and_when_its_grace_ends() -> None:
    facts = inputs(DUE)
    assert facts.next_change(DUE - timedelta(days=3)) == DUE
    after_due = facts.next_change(DUE)  # a dunning e-mail may come first
    assert after_due is not None and DUE < after_due <= DUE + GRACE
    assert facts.next_change(DUE + GRACE - timedelta(hours=1)) == DUE + GRACE


def test_the_earlier_of_the_accounts_own_past_due_instant_and_the_invoices_due_date_counts() -> None:
    earlier = DUE - timedelta(days=5)
    assert inputs(DUE, past_due_since=earlier).account_at(DUE + timedelta(days=1)).past_due_since == earlier
    assert inputs(earlier, past_due_since=DUE).account_at(DUE + timedelta(days=1)).past_due_since == earlier
    # An invoice not yet due leaves the account's own facts as they are.
    assert inputs(DUE, past_due_since=None).account_at(DUE - timedelta(days=1)).past_due_since is None
    assert inputs(DUE + GRACE, past_due_since=DUE).decide(DUE + GRACE).holds == frozenset({"billing"})


async def _entitlement(client, owner, headers) -> dict:
    response = await client.get(f"/v1/accounts/{owner.account_id}", headers=headers)
    assert response.status_code == 200, response.text
    return {"status": response.json()["status"], **response.json()["entitlement"]}


async def test_an_overdue_invoice_suspends_the_account_after_the_grace_and_paying_it_restores_it(
    client, session, signup, admin
) -> None:
    operator, owner = await admin(), await signup(account_name="Late Payer")
    await paid_subscription(client, session, owner, operator, plan="starter")  # billed by invoice, running
    invoice = await issue(client, operator.headers, owner, net_days=10)
    due = datetime.fromisoformat(invoice["due_at"])
    shown = await _entitlement(client, owner, owner.headers)
    assert (shown["status"], shown["level"], shown["warning_banner"]) == ("active", "running", None)

    with time_machine.travel(due + timedelta(days=1), tick=False):
        shown = await _entitlement(client, owner, await login(client, owner))
        assert (shown["status"], shown["level"], shown["holds"]) == ("past_due", "running", [])
        assert f"{due + GRACE:%Y-%m-%d %H:%M} UTC" in shown["warning_banner"]
        listed = await client.get(f"/v1/accounts/{owner.account_id}/invoices/{invoice['id']}",
                                  headers=await login(client, owner))
        assert listed.json()["overdue"] is True

    with time_machine.travel(due + GRACE + timedelta(minutes=1), tick=False):
        headers = await login(client, owner)
        shown = await _entitlement(client, owner, headers)
        assert (shown["status"], shown["level"], shown["access"]) == ("suspended", "stopped", "read_only")
        assert (shown["holds"], shown["reasons"]) == (["billing"], ["suspended: billing"])

        paid = await client.post(f"/v1/admin/invoices/{invoice['id']}/mark-paid", json={"reference": "late"},
                                 headers=await login(client, operator))
        assert paid.status_code == 200, paid.text
        shown = await _entitlement(client, owner, headers)
        assert (shown["status"], shown["level"], shown["holds"], shown["warning_banner"]) == (
            "active", "running", [], None)


async def test_voiding_an_overdue_invoice_lifts_its_hold_too(client, session, signup, admin) -> None:
    operator, owner = await admin(), await signup(account_name="Disputed")
    await paid_subscription(client, session, owner, operator, plan="starter")
    invoice = await issue(client, operator.headers, owner, net_days=0)
    with time_machine.travel(datetime.fromisoformat(invoice["due_at"]) + GRACE + timedelta(minutes=1), tick=False):
        headers = await login(client, owner)
        assert (await _entitlement(client, owner, headers))["holds"] == ["billing"]
        voided = await client.post(f"/v1/admin/invoices/{invoice['id']}/void", json={"reason": "disputed"},
                                   headers=await login(client, operator))
        assert voided.status_code == 200, voided.text
        assert (await _entitlement(client, owner, headers))["holds"] == []


async def test_paying_an_invoice_lifts_the_billing_hold_an_admin_set_and_no_other_while_voiding_lifts_none(
    client, session, signup, admin
) -> None:
    operator, owner = await admin(), await signup(account_name="Held")
    await paid_subscription(client, session, owner, operator, plan="starter")
    voided, paid = await issue(client, operator.headers, owner), await issue(client, operator.headers, owner)
    for reason in ("billing", "abuse"):
        held = await client.post(f"/v1/admin/accounts/{owner.account_id}/suspend", json={"reason": reason},
                                 headers=operator.headers)
        assert held.status_code == 200, held.text

    async def holds() -> tuple[list[str], list[str]]:
        account = (await client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
        return account["suspension_reasons"], account["entitlement"]["holds"]

    void = await client.post(f"/v1/admin/invoices/{voided['id']}/void", json={"reason": "wrong"},
                             headers=operator.headers)
    assert void.status_code == 200, void.text
    assert await holds() == (["abuse", "billing"], ["abuse", "billing"])  # voiding is no payment
    marked = await client.post(f"/v1/admin/invoices/{paid['id']}/mark-paid", json={}, headers=operator.headers)
    assert marked.status_code == 200, marked.text
    assert await holds() == (["abuse"], ["abuse"])  # a payment lifts the `billing` hold, only that one
    lifted = await session.scalars(select(AuditEntry).where(
        AuditEntry.action == "account.billing_status_changed", AuditEntry.target_id == owner.account_id,
    ).order_by(AuditEntry.seq.desc()).limit(1))
    assert lifted.one().after["suspension_reasons"] == ["abuse"]


async def test_the_reconciler_stops_the_services_of_an_account_overdue_past_its_grace_and_restarts_them_when_paid(
    live: Live,
) -> None:
    operator = await live.admin()
    owner = await live.paid_starter(operator, "Overdue Co", BillingMode.invoice)
    site = await live.ordered(owner, "shop")
    await live.converge(owner.account_id)
    assert (await live.instance(owner, site["id"]))["status"] == "running"
    invoice = await issue(live.client, operator.headers, owner, net_days=1)
    due = datetime.fromisoformat(invoice["due_at"])
    await live.work()  # the reconcile the invoice asked for schedules its due date
    assert due in [at for at, _ in await live.scheduled_of(owner.account_id)]

    with time_machine.travel(due + timedelta(minutes=1)):
        await live.converge(owner.account_id)
        headers = await live.login(owner)
        assert (await live.instance(headers, site["id"]))["status"] == "running"  # within the grace
        # The next deadline comes by the grace's end (a dunning e-mail's may come first).
        assert min(at for at, _ in await live.scheduled_of(owner.account_id) if at > due) <= due + GRACE

    with time_machine.travel(due + GRACE + timedelta(minutes=1)):
        await live.converge(owner.account_id)
        headers = await live.login(owner)
        stopped = await live.instance(headers, site["id"])
        assert (stopped["status"], stopped["desired_level"]) == ("stopped", "stopped")
        account = (await live.client.get(f"/v1/accounts/{owner.account_id}", headers=headers)).json()
        assert (account["status"], account["entitlement"]["holds"]) == ("suspended", ["billing"])
        assert (await live.page(site["slug"])).status_code == 503

        paid = await live.client.post(f"/v1/admin/invoices/{invoice['id']}/mark-paid", json={},
                                      headers=await live.login(operator))
        assert paid.status_code == 200, paid.text
        assert len(await live.jobs_of(owner.account_id, "todo")) == 1  # the reconcile the payment asked for
        await live.converge(owner.account_id)
        restored = await live.instance(headers, site["id"])
        assert (restored["status"], restored["desired_level"]) == ("running", "running")
        account = (await live.client.get(f"/v1/accounts/{owner.account_id}", headers=headers)).json()
        assert (account["status"], account["entitlement"]["holds"]) == ("active", [])
        assert (await live.page(site["slug"])).status_code == 200


async def test_an_overdue_invoice_terminates_where_the_policy_says_so_and_the_data_goes_after_a_fresh_read(
    live: Live,
) -> None:
    operator = await live.admin()
    owner = await live.paid_starter(operator, "Terminated Co", BillingMode.invoice)
    site = await live.ordered(owner, "shop")
    await live.converge(owner.account_id)
    assert live.data_dir(site).exists()
    policy = await live.client.put(f"/v1/admin/accounts/{owner.account_id}/dunning-policy",
                                   json={"grace": "P1D", "terminate_after": "P1D"}, headers=operator.headers)
    assert policy.status_code == 200, policy.text
    invoice = await issue(live.client, operator.headers, owner, net_days=1)
    due = datetime.fromisoformat(invoice["due_at"])

    # Past its due date, the grace and the termination delay: the deletion's own re-read of the facts (the
    # invoice among them) still says deleted, so the data goes.
    with time_machine.travel(due + timedelta(days=2, minutes=1)):
        await live.converge(owner.account_id)
        row = await live.row(site["id"])
    assert row.deleted_at is not None and row.observed_status == "deleted"
    assert not live.data_dir(site).exists()
