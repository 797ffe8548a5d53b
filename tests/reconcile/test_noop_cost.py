"""A cheap resync (issue 7 §9): a pass that changes nothing writes nothing and decrypts nothing it does not
send to the runtime, and the periodic sweeps read through indexes."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import event, text, update

from jushostit.kit.db import utcnow
from jushostit.models import Subscription
from jushostit.reconcile import service
from tests.live import Live


class CountingBox:
    """The real secret box, counting decryptions."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.decrypted = 0

    def decrypt(self, token: str) -> str:
        self.decrypted += 1
        return self.inner.decrypt(token)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@contextlib.contextmanager
def recorded_statements(live: Live) -> Iterator[list[str]]:
    """The first word of every statement sent to the database during the block."""
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        statements.append(statement.split()[0].upper())

    engine = live.container.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_a_pass_with_nothing_to_do_writes_nothing_and_decrypts_nothing(live: Live) -> None:
    owner = await live.signup("Quiet Co")
    await live.checkout(owner, "free")
    await live.ordered(owner, "quiet", template="static-site")
    await live.converge(owner.account_id)
    c = live.container
    box = CountingBox(c.secret_box)
    with recorded_statements(live) as statements:
        done = await service.reconcile_batch(c.database, c.settings, box, live.driver, [uuid.UUID(owner.account_id)],
                                             deadline_horizon=timedelta(0))

    assert done == (1, 0)
    assert box.decrypted == 0
    assert not {"INSERT", "UPDATE", "DELETE"} & set(statements), statements
    # A fixed few per chunk, whatever its size: locks, accounts, subscriptions, plans, instances, templates,
    # secrets, unlock.
    assert len(statements) <= 8, statements


async def test_a_pass_over_an_expired_instance_writes_nothing_when_nothing_changed(live: Live) -> None:
    live.configure(expired_retention_days=7)
    owner = await live.signup("Still Expired Co")
    await live.checkout(owner, "free")
    site = await live.ordered(owner, "lapsed")
    await live.converge(owner.account_id)
    ended = utcnow() - timedelta(days=1)  # within the retention period
    async with live.container.database.unit_of_work() as session:
        await session.execute(update(Subscription).where(Subscription.account_id == uuid.UUID(owner.account_id))
                              .values(current_period_start=ended - timedelta(days=30), current_period_end=ended))
    await live.reconcile(owner.account_id)
    expired = await live.row(site["id"])  # a reason and an expiry time recorded
    assert expired.observed_status == "expired" and expired.status_reason and expired.expired_at
    c = live.container

    with recorded_statements(live) as statements:
        await service.reconcile_batch(c.database, c.settings, c.secret_box, live.driver, [uuid.UUID(owner.account_id)],
                                      deadline_horizon=timedelta(0))

    assert not {"INSERT", "UPDATE", "DELETE"} & set(statements), statements
    assert (await live.row(site["id"])).last_reconciled_at == expired.last_reconciled_at


async def test_the_sweeps_read_through_indexes(live: Live) -> None:
    """The sweeps' predicates, with the planner told to avoid sequential scans: if no index serves a predicate,
    it still scans and the test fails."""
    cutoff = utcnow() - timedelta(days=30)
    sweeps = {
        "ix_subscriptions_active_period_end": (
            ("SELECT account_id FROM subscriptions WHERE status = 'active' AND current_period_end > :now"
             " AND current_period_end <= :horizon"), {"now": utcnow(), "horizon": utcnow() + timedelta(days=3)}),
        "ix_instances_live_expired_at": (
            ("SELECT account_id FROM instances WHERE deleted_at IS NULL AND expired_at IS NOT NULL"
             " AND expired_at <= :cutoff"), {"cutoff": cutoff}),
        "ix_idempotency_keys_created_at": (
            "DELETE FROM idempotency_keys WHERE created_at < :cutoff", {"cutoff": cutoff}),
    }
    # Fresh statistics and visibility maps: without them an index-only scan costs what a plain index scan does,
    # and on the near tie the planner may take another partial index of the same table (the live instances'
    # names) and filter on the predicate, whatever the other tests left in it (seen once).
    async with live.container.database.autocommit.connect() as maintenance:
        await maintenance.execute(text("VACUUM ANALYZE instances, subscriptions, idempotency_keys"))
    async with live.container.database.engine.connect() as connection:
        await connection.execute(text("SET LOCAL enable_seqscan = off"))
        for index, (query, parameters) in sweeps.items():
            plan = "\n".join(row[0] for row in await connection.execute(text("EXPLAIN " + query), parameters))
            assert index in plan, plan
        await connection.rollback()
