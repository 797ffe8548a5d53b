"""The dunning grace depends on the billing mode (DESIGN §3: card 7 days, invoice 14, prepaid never): the
reconciler must apply the same policy the account API shows, or it stops services the API says are running."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import update

from jushostit.kit.db import utcnow
from jushostit.models import Account, AccountStatus, BillingMode
from tests.live import Live, Signup


async def _paid_starter(live: Live, admin: Signup, mode: BillingMode) -> tuple[Signup, dict]:
    owner = await live.paid_starter(admin, f"{mode} Co", mode)
    return owner, await live.ordered(owner, "billed")


async def test_reconciler_applies_the_grace_of_the_billing_mode(live: Live) -> None:
    admin = await live.admin()
    accounts = {mode: await _paid_starter(live, admin, mode) for mode in (BillingMode.card, BillingMode.invoice)}
    ten_days_ago = utcnow() - timedelta(days=10)
    async with live.container.database.unit_of_work() as session:  # an invoice unpaid for 10 days
        await session.execute(update(Account).where(Account.id.in_([uuid.UUID(o.account_id) for o, _ in accounts.values()]))
                              .values(past_due_since=ten_days_ago, status=AccountStatus.past_due))
    expected = {BillingMode.card: "stopped", BillingMode.invoice: "running"}  # grace 7 days vs 14 days
    for mode, (owner, instance) in accounts.items():
        await live.converge(owner.account_id)
        shown = (await live.client.get(f"/v1/accounts/{owner.account_id}", headers=owner.headers)).json()
        assert shown["entitlement"]["level"] == expected[mode], (mode, shown["entitlement"])
        body = await live.instance(owner, instance["id"])
        assert body["status"] == expected[mode], (mode, body)
        assert (await live.page(instance["slug"])).status_code == (200 if expected[mode] == "running" else 503)
