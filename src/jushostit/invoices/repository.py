"""Every query of invoices, their numbers and their payments. Customer reads name the account: the tenant filter
of every customer route lives here."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.models import Invoice, InvoiceCounter, Payment


class InvoiceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *objects: object) -> None:
        self.session.add_all(objects)
        await self.session.flush()

    async def take_number(self, year: int) -> int:
        """The next number of `year`: its counter row is created at 1 or incremented, and stays locked until the
        transaction ends. Concurrent creates take consecutive numbers, one after the other; a create that rolls
        back gives its number back, so numbers have no gaps."""
        seq = await self.session.scalar(
            insert(InvoiceCounter)
            .values(year=year, last_seq=1)
            .on_conflict_do_update(index_elements=[InvoiceCounter.year],
                                   set_={"last_seq": InvoiceCounter.last_seq + 1})
            .returning(InvoiceCounter.last_seq)
        )
        assert seq is not None
        return int(seq)

    async def of_account(self, account_id: uuid.UUID, invoice_id: uuid.UUID) -> Invoice | None:
        return await self.session.scalar(
            select(Invoice).where(Invoice.account_id == account_id, Invoice.id == invoice_id)
        )

    async def by_id(self, invoice_id: uuid.UUID, *, for_update: bool = False) -> Invoice | None:
        """Any account's invoice: platform-admin routes only. `for_update` locks it and reads it afresh."""
        stmt = select(Invoice).where(Invoice.id == invoice_id)
        if for_update:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return await self.session.scalar(stmt)

    async def newest_first(
        self, *, account_id: uuid.UUID | None, status: str | None, before: uuid.UUID | None, limit: int
    ) -> list[Invoice]:
        """A page of invoices, newest first: the account's, or every account's when `account_id` is None
        (platform-admin routes only)."""
        stmt = select(Invoice).order_by(Invoice.id.desc()).limit(limit)
        if account_id is not None:
            stmt = stmt.where(Invoice.account_id == account_id)
        if status is not None:
            stmt = stmt.where(Invoice.status == status)
        if before is not None:
            stmt = stmt.where(Invoice.id < before)
        return list((await self.session.scalars(stmt)).all())

    async def claim_payment(
        self, invoice: Invoice, *, reference: str | None, recorded_by: uuid.UUID | None
    ) -> uuid.UUID | None:
        """Record the payment of the invoice's total: INSERT … ON CONFLICT DO NOTHING on its invoice_id, so an
        invoice is paid once. The payment's id, or None when it was paid already."""
        return await self.session.scalar(
            insert(Payment)
            .values(
                invoice_id=invoice.id, account_id=invoice.account_id, provider="manual", source="admin",
                amount_minor=invoice.total_minor, currency=invoice.currency, external_reference=reference,
                recorded_by=recorded_by,
            )
            .on_conflict_do_nothing(index_elements=[Payment.invoice_id])
            .returning(Payment.id)
        )
