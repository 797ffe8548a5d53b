"""Card accounts' usage reported to Stripe as Billing Meter Events (metering/stripe_usage.py), against the Stripe
stand-in: the month's charge in whole minor units (rounded down) as a running total, each event recorded pending
before it is sent, under an identifier (and idempotency key) made of the account, the month and the total before
it, so a lost answer or a crash sends the same event again and Stripe holds it once; an event unconfirmed past
23 hours is left to an operator; prepaid, invoice and free accounts are never reported."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from jushostit.billing.periods import as_instant, month_of
from jushostit.billing.stripe_api import stripe_client
from jushostit.config import Settings
from jushostit.kit.db import unit_of_work, utcnow
from jushostit.metering import service, stripe_usage
from jushostit.metering.readings import Metric
from jushostit.models import Account, AuditEntry, BillingMode, MeterReport, UsageDaily
from tests.billing.helpers import error_of
from tests.conftest import joined_session
from tests.metering.test_aggregation import local, priced_account, store
from tests.stripe_stand_in import stripe_stand_in
from tests.webhooks.helpers import stripe_settings

METER_EVENTS = "/v1/billing/meter_events"
# 7370 core-seconds: 2.047… core-hours, the first included, at 100 minor units: 104.72… exact. The daily sums
# round it half to even (105); Stripe is told 104, never more than was used.
FIRST_SECONDS, FIRST_CHARGE = "7370", 104
# One more core-hour: 204.72… exact, 204 reported in all, so the next event carries 100.
MORE_SECONDS, TOTAL_CHARGE = "3600", 204


class JoinedDatabase:
    """The test's rolled-back transaction in the shape of `kit.db.Database`: each unit of work a savepoint that is
    released on success and rolled back on error, as a commit and a rollback would be."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncSession]:
        async with joined_session(self.connection) as session:
            yield session

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        async with joined_session(self.connection) as session, unit_of_work(session):
            yield session


class Crash(Exception):
    """The process dies here: the unit of work does not commit."""


@pytest.fixture
def database(connection: AsyncConnection) -> Any:
    return JoinedDatabase(connection)


@pytest.fixture
def with_stripe(settings: Settings) -> Settings:
    return settings.model_copy(update=stripe_settings())


async def account_with_usage(client, session, signup, settings, mode: BillingMode = BillingMode.card,
                             seconds: str = FIRST_SECONDS) -> tuple[uuid.UUID, str]:
    """An account on a plan that prices core-hours, billed by `mode` with a Stripe customer, that used `seconds`
    core-seconds at the start of this month (aggregated into usage_daily)."""
    account_id = await priced_account(client, session, signup)
    account = await session.get(Account, account_id)
    assert account is not None
    customer = f"cus_{account_id.hex[:14]}"
    account.billing_mode, account.provider_customer_id = mode, customer
    await session.flush()
    await use(session, settings, account_id, seconds, at=as_instant(month_of(utcnow())))
    return account_id, customer


async def use(session, settings, account_id: uuid.UUID, seconds: str, *, at: datetime) -> None:
    await store(session, settings, [local(account_id, uuid.uuid4(), Metric.cpu_core_seconds, seconds, at)])
    await service.aggregate(session, settings, utcnow())


async def reports(session: AsyncSession, account_id: uuid.UUID) -> list[MeterReport]:
    session.expire_all()
    return list((await session.scalars(select(MeterReport).where(MeterReport.account_id == account_id)
                                       .order_by(MeterReport.reported_before))).all())


async def audit_after(session: AsyncSession, action: str, account_id: uuid.UUID) -> list[dict[str, Any] | None]:
    rows = await session.scalars(select(AuditEntry.after).where(
        AuditEntry.action == action, AuditEntry.target_id == str(account_id)).order_by(AuditEntry.seq))
    return list(rows)


def identifier(account_id: uuid.UUID, month: date, before: int) -> str:
    return f"jh-{account_id.hex}-{month:%Y%m}-{before}"


async def test_a_card_accounts_month_is_reported_as_one_event_of_its_charge_in_whole_units_rounded_down(
    client, session, signup, settings, database, with_stripe,
) -> None:
    account_id, customer = await account_with_usage(client, session, signup, settings)
    now = utcnow()
    router, stripe = stripe_stand_in()
    with router:
        sent = await stripe_usage.sync(database, with_stripe, now)

    expected = identifier(account_id, month_of(now), 0)
    assert sent == 1
    assert stripe.created(METER_EVENTS) == [{
        "event_name": "jushostit_usage", "identifier": expected, "timestamp": str(int(now.timestamp())),
        "payload[stripe_customer_id]": customer, "payload[value]": str(FIRST_CHARGE),
    }]
    assert stripe.keys(METER_EVENTS) == [expected]
    held = stripe.meter_events[expected]
    assert held["payload"] == {"stripe_customer_id": customer, "value": "104"}  # strings, as Stripe keeps them
    assert time.time() - 35 * 86400 < held["timestamp"] <= time.time() + 300  # within Stripe's window
    days = (await session.scalars(select(UsageDaily.cost_minor).where(UsageDaily.account_id == account_id))).all()
    assert sum(days) == 105  # usage_daily rounds half to even; the report rounds down

    [report] = await reports(session, account_id)
    assert (report.status, report.value, report.reported_before, report.identifier) == ("sent", 104, 0, expected)
    assert (report.customer, report.month, report.attempts, report.error, report.sent_at) == (
        customer, month_of(now), 1, None, now)
    assert report.timestamp == now
    assert await audit_after(session, "usage.report_recorded", account_id) == [
        {"identifier": expected, "month": month_of(now).isoformat(), "value": 104, "reported_before": 0}]
    assert await audit_after(session, "usage.reported_to_stripe", account_id) == [
        {"identifier": expected, "value": 104}]


async def test_more_usage_later_sends_only_the_difference_and_a_sync_with_nothing_new_sends_nothing(
    client, session, signup, settings, database, with_stripe,
) -> None:
    account_id, customer = await account_with_usage(client, session, signup, settings)
    router, stripe = stripe_stand_in()
    with router:
        first = await stripe_usage.sync(database, with_stripe, utcnow())
        await use(session, settings, account_id, MORE_SECONDS, at=as_instant(month_of(utcnow())) + timedelta(hours=1))
        now = utcnow()
        second = await stripe_usage.sync(database, with_stripe, now)
        third = await stripe_usage.sync(database, with_stripe, utcnow())

    month = month_of(now)
    assert (first, second, third) == (1, 1, 0)
    bodies = stripe.created(METER_EVENTS)
    assert len(bodies) == 2  # the sync with nothing new called Stripe not at all
    assert bodies[1] == {
        "event_name": "jushostit_usage", "identifier": identifier(account_id, month, FIRST_CHARGE),
        "timestamp": str(int(now.timestamp())), "payload[stripe_customer_id]": customer,
        "payload[value]": str(TOTAL_CHARGE - FIRST_CHARGE),
    }
    assert stripe.keys(METER_EVENTS) == [identifier(account_id, month, 0), identifier(account_id, month, 104)]
    rows = await reports(session, account_id)
    assert [(r.reported_before, r.value, r.status) for r in rows] == [(0, 104, "sent"), (104, 100, "sent")]
    assert sum(int(e["payload"]["value"]) for e in stripe.meter_events.values()) == TOTAL_CHARGE


async def test_an_answer_lost_after_stripe_took_the_event_resends_the_same_event_and_stripe_holds_it_once(
    client, session, signup, settings, database, with_stripe,
) -> None:
    account_id, _ = await account_with_usage(client, session, signup, settings)
    router, stripe = stripe_stand_in()
    with router:
        stripe.fail_next.append(httpx.ReadTimeout("the answer was lost"))  # Stripe holds it; we never hear
        lost = await stripe_usage.sync(database, with_stripe, utcnow())
        [pending] = await reports(session, account_id)
        assert (lost, pending.status, pending.attempts) == (0, "pending", 1)
        assert pending.error is not None and pending.error.startswith("APIConnectionError")
        retried = await stripe_usage.sync(database, with_stripe, utcnow())

    expected = identifier(account_id, month_of(utcnow()), 0)
    assert retried == 1
    first, again = stripe.created(METER_EVENTS)
    assert first == again and first["identifier"] == expected  # the same event, not a new one
    assert stripe.keys(METER_EVENTS) == [expected, expected]
    assert list(stripe.meter_events) == [expected]  # Stripe holds one event
    [report] = await reports(session, account_id)
    assert (report.status, report.value, report.attempts, report.error) == ("sent", 104, 2, None)
    assert await audit_after(session, "usage.reported_to_stripe", account_id) == [
        {"identifier": expected, "value": 104}]


async def test_a_crash_after_stripe_took_the_event_but_before_it_was_marked_sent_resends_it_once(
    client, session, signup, settings, database, with_stripe,
) -> None:
    account_id, _ = await account_with_usage(client, session, signup, settings)
    now, month = utcnow(), month_of(utcnow())
    stripe_api = stripe_client(with_stripe)
    assert stripe_api is not None
    router, stripe = stripe_stand_in()
    with router:
        async with database.unit_of_work() as uow:  # a sync's first step, committed
            account = await uow.get(Account, account_id)
            await stripe_usage.record_next_report(uow, with_stripe, account, month, now)
        with pytest.raises(Crash):
            async with database.unit_of_work() as uow:
                assert await stripe_usage.send_pending(uow, stripe_api, now) == 1  # Stripe took it …
                raise Crash  # … and the process died before `sent` was committed
        [still] = await reports(session, account_id)
        assert (still.status, still.attempts, still.sent_at) == ("pending", 0, None)
        async with database.unit_of_work() as uow:  # the hourly resend
            resent = await stripe_usage.send_pending(uow, stripe_api, utcnow())
        nothing_new = await stripe_usage.sync(database, with_stripe, utcnow())

    expected = identifier(account_id, month, 0)
    assert (resent, nothing_new) == (1, 0)
    assert stripe.keys(METER_EVENTS) == [expected, expected]
    first, again = stripe.created(METER_EVENTS)
    assert first == again and first["payload[value]"] == "104"
    assert list(stripe.meter_events) == [expected]
    [report] = await reports(session, account_id)
    assert (report.status, report.value, report.attempts) == ("sent", 104, 1)
    assert sum(int(e["payload"]["value"]) for e in stripe.meter_events.values()) == FIRST_CHARGE  # not doubled


async def test_a_pending_report_older_than_23_hours_is_marked_unknown_and_not_sent_again(
    client, session, signup, settings, database, with_stripe,
) -> None:
    account_id, _ = await account_with_usage(client, session, signup, settings)
    now = utcnow()
    async with database.unit_of_work() as uow:  # a sync that crashed a day ago, after recording its event
        account = await uow.get(Account, account_id)
        report = await stripe_usage.record_next_report(uow, with_stripe, account, month_of(now), now)
        assert report is not None
    await session.execute(update(MeterReport).where(MeterReport.account_id == account_id)
                          .values(created_at=now - timedelta(hours=23, minutes=1)))
    router, stripe = stripe_stand_in()
    with router:
        sent = await stripe_usage.sync(database, with_stripe, now)

    assert sent == 0 and stripe.created(METER_EVENTS) == []
    [stale] = await reports(session, account_id)  # and no new one: its value still counts as reported
    assert (stale.status, stale.attempts, stale.sent_at) == ("unknown", 0, None)
    assert stale.error == "not confirmed within Stripe's 24-hour deduplication window"
    assert await audit_after(session, "usage.reported_to_stripe", account_id) == []


async def test_an_event_stripe_refuses_is_dropped_with_its_reason_and_reported_again_by_the_next_sync(
    client, session, signup, settings, database, with_stripe,
) -> None:
    account_id, _ = await account_with_usage(client, session, signup, settings)
    now = utcnow()
    async with database.unit_of_work() as uow:
        account = await uow.get(Account, account_id)
        report = await stripe_usage.record_next_report(uow, with_stripe, account, month_of(now), now)
        assert report is not None
    await session.execute(update(MeterReport).where(MeterReport.account_id == account_id)
                          .values(timestamp=now - timedelta(days=36)))  # older than Stripe takes
    stripe_api = stripe_client(with_stripe)
    assert stripe_api is not None
    router, stripe = stripe_stand_in()
    with router:
        async with database.unit_of_work() as uow:
            sent = await stripe_usage.send_pending(uow, stripe_api, now)

    assert sent == 0 and len(stripe.created(METER_EVENTS)) == 1 and stripe.meter_events == {}
    assert await reports(session, account_id) == []  # Stripe took nothing: the identifier is still free
    [entry] = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "usage.report_refused",
                                                               AuditEntry.account_id == account_id))).all()
    assert entry.after["error"].startswith("InvalidRequestError: The timestamp must be")
    async with database.unit_of_work() as uow:
        account = await uow.get(Account, account_id)
        again = await stripe_usage.record_next_report(uow, with_stripe, account, month_of(now), now)
        assert again is not None and again.reported_before == 0 and again.identifier == entry.after["identifier"]


@pytest.mark.parametrize("mode", [BillingMode.prepaid, BillingMode.invoice, BillingMode.free])
async def test_prepaid_invoice_and_free_accounts_are_never_reported_though_their_usage_is_kept(
    client, session, signup, settings, database, with_stripe, mode,
) -> None:
    account_id, _ = await account_with_usage(client, session, signup, settings, mode)
    router, stripe = stripe_stand_in()
    with router:
        sent = await stripe_usage.sync(database, with_stripe, utcnow())

    assert sent == 0 and stripe.created(METER_EVENTS) == []
    assert await reports(session, account_id) == []
    [day] = (await session.scalars(select(UsageDaily).where(UsageDaily.account_id == account_id))).all()
    assert (day.quantities, day.cost_minor) == ({"cpu_core_seconds": FIRST_SECONDS}, 105)


async def test_without_stripe_configured_sync_sends_and_records_nothing(
    client, session, signup, settings, database,
) -> None:
    assert not settings.stripe_configured
    account_id, _ = await account_with_usage(client, session, signup, settings)
    router, stripe = stripe_stand_in()
    with router:
        sent = await stripe_usage.sync(database, settings, utcnow())

    assert sent == 0 and stripe.requests == []
    assert await reports(session, account_id) == []


async def sync_jobs(session: AsyncSession) -> list[Any]:
    rows = await session.execute(text(
        "SELECT queueing_lock, args FROM procrastinate_jobs WHERE task_name = 'metering.report_to_stripe' "
        "AND status = 'todo'"))
    return list(rows.all())


async def drop_sync_jobs(container) -> None:
    """Queued jobs are committed by procrastinate's own connection, outside the test's transaction."""
    async with container.database.engine.begin() as connection:
        await connection.execute(text(
            "DELETE FROM procrastinate_jobs WHERE task_name = 'metering.report_to_stripe' AND status = 'todo'"))


async def test_a_platform_admin_queues_a_stripe_sync_and_anyone_else_is_refused(
    client, session, signup, admin, container,
) -> None:
    operator, customer = await admin(), await signup()
    await drop_sync_jobs(container)
    try:
        refused = await client.post("/v1/admin/metering/stripe-sync", headers=customer.headers)
        error_of(refused, 403, "admin_required")
        assert await sync_jobs(session) == []

        accepted = await client.post("/v1/admin/metering/stripe-sync", headers=operator.headers)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json() == {"message": "The usage report to Stripe is queued"}
        assert [job.queueing_lock for job in await sync_jobs(session)] == ["metering.report_to_stripe"]
    finally:
        await drop_sync_jobs(container)
