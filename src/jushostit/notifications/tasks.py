"""Email jobs: deliver one (deferred after the commit that queued it) and a sweep that heals lost defers
and runs the retries whose backoff has passed."""

from __future__ import annotations

import uuid

from jushostit import container
from jushostit.kit.db import utcnow
from jushostit.kit.jobs import app
from jushostit.notifications import service


@app.task(name=service.DELIVER_TASK, queue="email", pass_context=False)
async def deliver_email(email_id: str) -> None:
    c = container.current()
    async with c.database.unit_of_work() as session:
        await service.deliver(session, c.settings, uuid.UUID(email_id), utcnow())


@app.periodic(cron="* * * * *", periodic_id="email.sweep")
@app.task(name="email.sweep", queue="email", queueing_lock="email.sweep", pass_context=False)
async def sweep_outbox(timestamp: int) -> None:
    c = container.current()
    async with c.database.unit_of_work() as session:
        due = await service.due_emails(session, utcnow())
    for email_id in due:
        async with c.database.unit_of_work() as session:
            await service.deliver(session, c.settings, email_id, utcnow())
