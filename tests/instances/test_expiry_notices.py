"""The "expiring in 3 days" email goes out once per instance per period, and not for a renewed period."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from jushostit.instances.service import send_expiry_notices
from jushostit.kit.db import unit_of_work, utcnow
from jushostit.models import EmailOutbox


async def _expiring_emails(session, email: str) -> list[EmailOutbox]:
    rows = await session.scalars(
        select(EmailOutbox).where(EmailOutbox.to_address == email, EmailOutbox.template == "instance_expiring")
    )
    return list(rows.all())


async def test_notice_once_per_period(client, session, signup, settings) -> None:
    owner = await signup()
    await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "free"}, headers=owner.headers)
    order = await client.post(f"/v1/accounts/{owner.account_id}/instances",
                              json={"template": "static-site", "name": "shop"}, headers=owner.headers)
    assert order.status_code == 201, order.text
    now = utcnow()

    async def sweep(days: float) -> int:
        async with unit_of_work(session):  # as the job runs it: emails are queued with their delivery jobs
            return await send_expiry_notices(session, settings, now=now + timedelta(days=days))

    assert await sweep(20) == 0  # not yet due
    assert await _expiring_emails(session, owner.email) == []

    assert await sweep(27.05) >= 1
    mails = await _expiring_emails(session, owner.email)
    assert len(mails) == 1 and "shop" in mails[0].subject and "Renew" in mails[0].body
    # A second sweep in the same period sends nothing more.
    assert await sweep(28) == 0
    assert len(await _expiring_emails(session, owner.email)) == 1
