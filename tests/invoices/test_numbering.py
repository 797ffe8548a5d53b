"""Invoice numbers run per calendar year without gaps or duplicates (INV-<year>-<sequence>): a new year starts at
1, a create that rolls back gives its number back, and concurrent creates on real connections take consecutive
numbers. Each test issues its invoices in a year of its own (time-machine), so the counters of other tests never
meet it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta

import time_machine
from sqlalchemy import delete

from jushostit.invoices import service
from jushostit.invoices.schemas import InvoiceLineCreate
from jushostit.models import BillingMode, InvoiceCounter
from tests.billing.helpers import login
from tests.invoices.helpers import LINES, invoiced, issue
from tests.live import Live

ONE_LINE = [InvoiceLineCreate(description="Hosting", unit_amount_minor=100)]


class Abandoned(Exception):
    """Raised inside a unit of work after the invoice was created: the transaction rolls back."""


async def test_numbers_run_per_year_without_gaps_and_a_new_year_starts_at_one(client, session, signup, admin) -> None:
    operator, owner = await admin(), await invoiced(session, signup)
    new_years_eve = datetime(2091, 12, 31, 23, 59, tzinfo=UTC)
    with time_machine.travel(new_years_eve, tick=False):
        headers = await login(client, operator)  # signed in at the travelled time
        numbers = [(await issue(client, headers, owner))["number"] for _ in range(3)]
    with time_machine.travel(new_years_eve + timedelta(minutes=2), tick=False):
        headers = await login(client, operator)
        numbers += [(await issue(client, headers, owner))["number"] for _ in range(2)]
    assert numbers == ["INV-2091-000001", "INV-2091-000002", "INV-2091-000003", "INV-2092-000001",
                       "INV-2092-000002"]


async def test_a_create_that_rolls_back_gives_its_number_back(live: Live) -> None:
    try:
        with time_machine.travel(datetime(2094, 5, 4, 12, tzinfo=UTC)):
            operator, owner = await live.admin(), await live.signup("Rolled Back Co")
            await live.set_billing_mode(owner, BillingMode.invoice)
            first = await issue(live.client, operator.headers, owner)
            with contextlib.suppress(Abandoned):
                async with live.container.database.unit_of_work() as session:
                    taken = await service.create(
                        session, account_id=uuid.UUID(owner.account_id), currency="EUR", lines=ONE_LINE,
                        due_at=None, net_days=30, memo=None, created_by=uuid.UUID(operator.user_id),
                    )
                    assert taken.number == "INV-2094-000002"
                    raise Abandoned
            second = await issue(live.client, operator.headers, owner)
        assert (first["number"], second["number"]) == ("INV-2094-000001", "INV-2094-000002")
    finally:
        await _forget_counter(live, 2094)


async def test_concurrent_creates_take_consecutive_numbers_even_when_some_roll_back(live: Live) -> None:
    """Twelve creates at once, over HTTP and on the service's own connections, four of which roll back after
    taking a number: the eight that commit hold 1..8, once each."""
    try:
        with time_machine.travel(datetime(2093, 3, 1, 12, tzinfo=UTC)):
            operator, owner = await live.admin(), await live.signup("Concurrent Co")
            await live.set_billing_mode(owner, BillingMode.invoice)

            async def over_http() -> str:
                response = await live.client.post(f"/v1/admin/accounts/{owner.account_id}/invoices",
                                                  json={"currency": "EUR", "lines": LINES}, headers=operator.headers)
                assert response.status_code == 201, response.text
                return str(response.json()["number"])

            async def rolled_back() -> None:
                with contextlib.suppress(Abandoned):
                    async with live.container.database.unit_of_work() as session:
                        await service.create(
                            session, account_id=uuid.UUID(owner.account_id), currency="EUR", lines=ONE_LINE,
                            due_at=None, net_days=30, memo=None, created_by=uuid.UUID(operator.user_id),
                        )
                        raise Abandoned

            outcomes = await asyncio.gather(*(over_http() for _ in range(8)), *(rolled_back() for _ in range(4)))
        committed = [number for number in outcomes if number is not None]
        assert sorted(committed) == [f"INV-2093-{seq:06d}" for seq in range(1, 9)]
        listed = await live.client.get("/v1/admin/invoices", params={"account_id": owner.account_id},
                                       headers=await live.login(operator))
        assert sorted(i["number"] for i in listed.json()["items"]) == sorted(committed)
    finally:
        await _forget_counter(live, 2093)


async def _forget_counter(live: Live, year: int) -> None:
    """The test's year is its own: its counter goes with the test (its accounts, and so its invoices, are
    removed by the live fixture)."""
    async with live.container.database.unit_of_work() as session:
        await session.execute(delete(InvoiceCounter).where(InvoiceCounter.year == year))
