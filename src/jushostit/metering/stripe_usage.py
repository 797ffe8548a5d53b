"""Card accounts' usage charges, reported to Stripe as Billing Meter Events without ever billing twice.

Each account's month is reported as a running total: an event carries the difference between the month's
charge so far (exact minor units, rounded down to whole units) and what was already reported, so the rounding
error is below one unit per month and never grows, however many reports it takes. The event is recorded
(`pending`) before it is sent and marked `sent` after, under an identifier made of the account, the month and
the total before it, so a retried or crashed sync sends the same event again, never a new one. Stripe
deduplicates identifiers only for 24 hours: a pending event older than that is not sent again automatically
(it is marked `unknown` for an operator, who can tell from Stripe's meter summaries whether it arrived).

Stripe's meter takes one unit per minor unit of the account's currency: its price is 1 minor unit per unit,
and our plan prices decide what usage costs. Prepaid and invoice accounts are never reported.
"""

from __future__ import annotations

import math
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal

import stripe
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit
from jushostit.billing.periods import as_instant, month_of, next_month
from jushostit.billing.repository import BillingRepository
from jushostit.billing.stripe_api import stripe_client
from jushostit.config import Settings
from jushostit.kit import context
from jushostit.kit.db import Database
from jushostit.metering import service
from jushostit.metering.repository import MeteringRepository
from jushostit.models import Account, MeterReport

log = structlog.get_logger(__name__)

# Stripe accepts meter events up to 35 days old and 5 minutes ahead; Stripe's identifier deduplication lasts
# 24 hours (we stop resending an unconfirmed event well before).
STRIPE_EVENT_MAX_AGE = timedelta(days=35)
RESEND_WINDOW = timedelta(hours=23)


def whole_units(charge_minor: Decimal) -> int:
    """What of an exact charge is reported: whole minor units, rounded down (never more than was used)."""
    return math.floor(charge_minor)


def report_value(cumulative_minor: Decimal, reported: int) -> int:
    """The next event's value: the month's charge so far less what was reported (0: nothing to send; a charge
    that went down, when usage was corrected, is not taken back)."""
    return max(0, whole_units(cumulative_minor) - reported)


def identifier(account_id: uuid.UUID, month: date, reported_before: int) -> str:
    return f"jh-{account_id.hex}-{month:%Y%m}-{reported_before}"


def event_timestamp(month: date, now: datetime) -> datetime | None:
    """The event's time: now, or for a month already over, its last second, so Stripe bills it in that month's
    period. None when that is too old for Stripe to take."""
    end = as_instant(next_month(month))
    moment = now if now < end else end - timedelta(seconds=1)
    return moment if now - moment < STRIPE_EVENT_MAX_AGE - timedelta(hours=1) else None


async def record_next_report(session: AsyncSession, settings: Settings, account: Account, month: date,
                             now: datetime) -> MeterReport | None:
    """The event that brings the month's reported total up to its charge, recorded pending (not sent)."""
    if account.provider_customer_id is None:
        return None
    repository = MeteringRepository(session)
    charge = await service.month_charge_exact(session, settings, account.id, month)
    reported = await repository.reported(account.id, month)
    value = report_value(charge, reported)
    timestamp = event_timestamp(month, now)
    if value == 0 or timestamp is None:
        return None
    report = MeterReport(account_id=account.id, month=month, identifier=identifier(account.id, month, reported),
                         event_name=settings.stripe_usage_meter_event, customer=account.provider_customer_id,
                         reported_before=reported, value=value, timestamp=timestamp, status="pending", attempts=0)
    await repository.add(report)
    await audit.record(session, action="usage.report_recorded", target_type="account", target_id=account.id,
                       account_id=account.id, actor=context.SYSTEM,
                       after={"identifier": report.identifier, "month": month.isoformat(), "value": value,
                              "reported_before": reported})
    return report


async def send(client: stripe.StripeClient, report: MeterReport, now: datetime) -> str:
    """One pending event to Stripe: `sent`; `failed` (no answer, or Stripe could not take it now: kept pending
    for the next attempt); `refused` (Stripe answered that the event is invalid: it took nothing, so the
    identifier is still free); or `unknown` (unconfirmed past the deduplication window)."""
    if now - report.created_at > RESEND_WINDOW:
        report.status, report.error = "unknown", "not confirmed within Stripe's 24-hour deduplication window"
        log.error("metering.stripe_report_unknown", identifier=report.identifier)
        return "unknown"
    report.attempts += 1
    try:
        await client.v1.billing.meter_events.create_async(
            params={"event_name": report.event_name, "identifier": report.identifier,
                    "timestamp": int(report.timestamp.timestamp()),
                    "payload": {"stripe_customer_id": report.customer, "value": str(report.value)}},
            options={"idempotency_key": report.identifier},
        )
    except stripe.InvalidRequestError as error:
        report.error = f"{type(error).__name__}: {error.user_message or error}"[:500]
        log.error("metering.stripe_report_refused", identifier=report.identifier, error=report.error)
        return "refused"
    except stripe.StripeError as error:
        report.error = f"{type(error).__name__}: {error.user_message or error}"[:500]
        log.warning("metering.stripe_report_failed", identifier=report.identifier, error=type(error).__name__)
        return "failed"
    report.status, report.sent_at, report.error = "sent", now, None
    return "sent"


async def send_pending(session: AsyncSession, client: stripe.StripeClient, now: datetime) -> int:
    """Every pending event (a crashed or failed sync's included), each with its audit entry once sent. An
    event Stripe refused is dropped, with its reason in the audit log: what it carried is not counted as
    reported, so the next sync reports it again (once whatever made Stripe refuse it is fixed)."""
    sent = 0
    for report in await MeteringRepository(session).pending_reports():
        outcome = await send(client, report, now)
        if outcome == "sent":
            sent += 1
            await audit.record(session, action="usage.reported_to_stripe", target_type="account",
                               target_id=report.account_id, account_id=report.account_id, actor=context.SYSTEM,
                               after={"identifier": report.identifier, "value": report.value})
        elif outcome == "refused":
            await session.delete(report)
            await audit.record(session, action="usage.report_refused", target_type="account",
                               target_id=report.account_id, account_id=report.account_id, actor=context.SYSTEM,
                               after={"identifier": report.identifier, "value": report.value, "error": report.error})
    return sent


async def sync(database: Database, settings: Settings, now: datetime) -> int:
    """Record what each card account's usage adds since the last report (this month, and last month for usage
    that arrived late), then send every pending event. Each step commits on its own: recorded before sent.
    Returns how many events were sent."""
    client = stripe_client(settings)
    if client is None:
        return 0
    months = [month_of(now - timedelta(days=2)), month_of(now)]
    for month in sorted(set(months)):
        async with database.reader() as session:
            account_ids = [a.id for a in await MeteringRepository(session).card_accounts_with_usage(
                month, next_month(month))]
        for account_id in account_ids:
            async with database.unit_of_work() as session:
                account = await BillingRepository(session).lock_account(account_id)  # one report at a time
                if account is not None:
                    await record_next_report(session, settings, account, month, now)
    async with database.unit_of_work() as session:
        return await send_pending(session, client, now)
