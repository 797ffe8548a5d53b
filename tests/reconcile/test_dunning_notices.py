"""Dunning e-mails (DESIGN §3): a past-due episode's stages — payment failed, each reminder, the suspension
warning a day before the grace ends, suspended — and "restored" once it is paid, each e-mailed exactly once
however many reconcile passes see it due, and a stage overtaken by a later one never sent late."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import time_machine
from sqlalchemy import select, update

from jushostit.billing import service as billing
from jushostit.entitlement import DunningStage
from jushostit.kit.db import utcnow
from jushostit.models import Account, AccountStatus, BillingMode, DunningNotice
from tests.live import Live, Signup

DUNNING_TEMPLATES = ("payment_failed", "payment_reminder", "suspension_warning", "account_suspended",
                     "account_restored")


async def _past_due_card_account(live: Live, since: datetime) -> Signup:
    owner = await live.paid_starter(await live.admin(), "Dunned Co", BillingMode.card)
    await live.ordered(owner, "shop")
    await _set_past_due(live, owner, since)
    return owner


async def _set_past_due(live: Live, owner: Signup, since: datetime | None) -> None:
    """What a failed (or, with None, a recovered) payment records on the account."""
    async with live.container.database.unit_of_work() as session:
        await session.execute(update(Account).where(Account.id == uuid.UUID(owner.account_id)).values(
            past_due_since=since, status=AccountStatus.past_due if since else AccountStatus.active,
            suspension_reasons=[]))


async def _dunning_emails(live: Live, owner: Signup) -> list[str]:
    return [email.template for email in await live.emails_of(owner) if email.template in DUNNING_TEMPLATES]


async def test_each_stage_of_a_past_due_episode_is_emailed_once_in_order_and_restored_after_payment(live: Live) -> None:
    since = utcnow()
    owner = await _past_due_card_account(live, since)
    # The card defaults: grace 7 days, reminders at 1, 3 and 6 days (the one at 6 days is the warning's day).
    expected = ["payment_failed"]
    for moment, stage in [(timedelta(0), None), (timedelta(days=1), "payment_reminder"),
                          (timedelta(days=3), "payment_reminder"), (timedelta(days=6), "suspension_warning"),
                          (timedelta(days=7), "account_suspended")]:
        with time_machine.travel(since + moment + timedelta(minutes=1), tick=True):
            for _ in range(3):  # every pass sees the stage due; one e-mail goes out
                await live.converge(owner.account_id)
        expected += [stage] if stage else []
        assert await _dunning_emails(live, owner) == expected, moment

    suspended = (await live.emails_of(owner, "account_suspended"))[0]
    assert "Dunned Co" in suspended.subject and "payment is overdue" in suspended.body
    warning = (await live.emails_of(owner, "suspension_warning"))[0]
    assert f"{since + timedelta(days=7):%Y-%m-%d %H:%M} UTC" in warning.body

    with time_machine.travel(since + timedelta(days=8), tick=True):
        await _set_past_due(live, owner, None)
        for _ in range(2):
            await live.converge(owner.account_id)
    assert await _dunning_emails(live, owner) == [*expected, "account_restored"]
    sent = await live.audit("account.dunning_notice_sent", owner.account_id)
    assert [entry.after["kind"] for entry in sent] == [
        "payment_failed", "reminder", "reminder", "suspension_warning", "suspended", "restored"]
    assert [entry.after["step"] for entry in sent] == [0, 1, 2, 0, 0, 0]


async def test_a_stage_overtaken_while_nobody_looked_is_not_sent_late(live: Live) -> None:
    # Learnt six and a half days late (a webhook that never came, caught by the pull): the warning alone.
    owner = await _past_due_card_account(live, utcnow() - timedelta(days=6, hours=12))
    await live.converge(owner.account_id)
    await live.converge(owner.account_id)
    assert await _dunning_emails(live, owner) == ["suspension_warning"]


async def test_an_episode_paid_before_the_suspension_ends_without_a_restored_email(live: Live) -> None:
    owner = await _past_due_card_account(live, utcnow())
    await live.converge(owner.account_id)
    await _set_past_due(live, owner, None)
    await live.converge(owner.account_id)
    assert await _dunning_emails(live, owner) == ["payment_failed"]
    async with live.container.database.sessionmaker() as session:
        account = await session.get(Account, uuid.UUID(owner.account_id))
        assert account is not None and account.dunning_episode is None  # closed: the next failure is a new episode


async def test_concurrent_passes_claim_a_notice_once(live: Live) -> None:
    since = utcnow()
    owner = await live.paid_starter(await live.admin(), "Raced Co", BillingMode.card)
    await _set_past_due(live, owner, since)
    async with live.container.database.sessionmaker() as session:
        account = await session.get(Account, uuid.UUID(owner.account_id))
        assert account is not None
    stage = DunningStage("payment_failed", 0, since)

    async def one_pass() -> str | None:
        async with live.container.database.unit_of_work() as session:
            return await billing.send_dunning_notice(session, live.settings, account, past_due_since=since,
                                                     stage=stage, suspends_at=since + timedelta(days=7), now=utcnow())

    outcomes = await asyncio.gather(*(one_pass() for _ in range(8)))
    assert outcomes.count("payment_failed") == 1 and outcomes.count(None) == 7
    assert await _dunning_emails(live, owner) == ["payment_failed"]
    async with live.container.database.sessionmaker() as session:
        claims = (await session.scalars(select(DunningNotice).where(
            DunningNotice.account_id == uuid.UUID(owner.account_id)))).all()
    assert [(c.kind, c.step, c.episode) for c in claims] == [("payment_failed", 0, since)]
