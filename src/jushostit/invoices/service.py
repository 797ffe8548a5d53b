"""Net-30 invoices: created by platform admins for accounts billed `invoice`, paid off-platform (an admin records
the payment) or voided. Never commits.

- **Facts.** An open invoice is a billing fact: past its due date the account is past due from that date, and
  suspended (`billing`) once the dunning policy's grace has run out (billing.facts). Every change takes the
  account's lock (`BillingRepository.lock_account`, the one lock of an account's facts), is audited in its
  transaction and asks for a reconcile of the account, so its hold is applied or lifted at once and the due
  date becomes one of its deadlines.
- **Numbers without gaps.** `INV-<year>-<sequence>`, per calendar year (UTC) of issue, taken from the year's
  counter row in the transaction that inserts the invoice (`InvoiceRepository.take_number`).
- **Paid once.** Paying writes one `payments` row, unique per invoice; paying a paid invoice again adds nothing
  and answers it as it is, and so does voiding a void one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit
from jushostit.billing import service as billing
from jushostit.billing.repository import BillingRepository
from jushostit.invoices.repository import InvoiceRepository
from jushostit.invoices.schemas import InvoiceLineCreate
from jushostit.kit.db import utcnow
from jushostit.kit.errors import BadRequest, Conflict, NotFound
from jushostit.models import Account, BillingMode, Invoice, InvoiceLine, InvoiceStatus
from jushostit.triggers import request_reconcile


def invoice_number(year: int, seq: int) -> str:
    return f"INV-{year}-{seq:06d}"


def _fields(invoice: Invoice) -> dict[str, Any]:
    return {
        "number": invoice.number, "status": invoice.status, "currency": invoice.currency,
        "total_minor": invoice.total_minor, "due_at": invoice.due_at.isoformat(),
    }


async def _locked_account(session: AsyncSession, account_id: uuid.UUID) -> Account:
    account = await BillingRepository(session).lock_account(account_id)
    if account is None:
        raise NotFound("Account not found")
    return account


async def create(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    currency: str,
    lines: Sequence[InvoiceLineCreate],
    due_at: datetime | None,
    net_days: int,
    memo: str | None,
    created_by: uuid.UUID,
) -> Invoice:
    """Issue an invoice now, due at `due_at` or `net_days` later. Only accounts billed `invoice` get one (409
    `billing_mode_not_invoice`); a due date already past is refused (400 `due_date_in_past`): it would make the
    account past due before the customer could pay."""
    account = await _locked_account(session, account_id)
    if account.billing_mode != BillingMode.invoice:
        raise Conflict(
            f"The account is billed by {account.billing_mode.value}, not by invoice",
            code="billing_mode_not_invoice", details={"billing_mode": account.billing_mode.value},
        )
    now = utcnow()
    due = due_at if due_at is not None else now + timedelta(days=net_days)
    if due < now:
        raise BadRequest("The due date is in the past", code="due_date_in_past")
    repository = InvoiceRepository(session)
    seq = await repository.take_number(now.year)
    invoice = Invoice(
        account_id=account.id, number=invoice_number(now.year, seq), year=now.year, seq=seq, currency=currency,
        total_minor=sum(line.quantity * line.unit_amount_minor for line in lines), status=InvoiceStatus.open.value,
        memo=memo, issued_at=now, due_at=due, created_by=created_by,
        lines=[
            InvoiceLine(position=position, description=line.description, quantity=line.quantity,
                        unit_amount_minor=line.unit_amount_minor, amount_minor=line.quantity * line.unit_amount_minor)
            for position, line in enumerate(lines, 1)
        ],
    )
    await repository.add(invoice)
    await audit.record(
        session, action="invoice.created", target_type="invoice", target_id=invoice.id, account_id=account.id,
        after={**_fields(invoice), "lines": len(lines), "issued_at": now.isoformat()},
    )
    request_reconcile(account.id)  # its due date is a deadline of the account's entitlement
    return invoice


async def _locked_invoice(session: AsyncSession, invoice_id: uuid.UUID) -> tuple[Account, Invoice]:
    """The invoice, read afresh under its account's lock (taken first, as every writer of the account's facts
    does) and its own; and its account."""
    repository = InvoiceRepository(session)
    found = await repository.by_id(invoice_id)
    if found is None:
        raise NotFound("Invoice not found", code="invoice_not_found")
    account = await _locked_account(session, found.account_id)
    invoice = await repository.by_id(invoice_id, for_update=True)
    assert invoice is not None  # an invoice goes only with its account, which is locked
    return account, invoice


async def mark_paid(
    session: AsyncSession, *, invoice_id: uuid.UUID, reference: str | None, recorded_by: uuid.UUID
) -> Invoice:
    """An admin records the invoice's payment: one `payments` row of its total, and the invoice is paid, so it
    no longer makes the account past due; like every payment it lifts the account's `billing` hold (only that
    one). Marking a paid invoice again changes nothing and answers it; a void one is 409 `invoice_void`."""
    account, invoice = await _locked_invoice(session, invoice_id)
    if invoice.status == InvoiceStatus.paid:
        return invoice
    if invoice.status == InvoiceStatus.void:
        raise Conflict("A void invoice cannot be paid", code="invoice_void")
    payment_id = await InvoiceRepository(session).claim_payment(invoice, reference=reference, recorded_by=recorded_by)
    assert payment_id is not None, "an open invoice has no payment yet"
    invoice.status, invoice.paid_at, invoice.payment_reference = InvoiceStatus.paid.value, utcnow(), reference
    await session.flush()
    await audit.record(
        session, action="invoice.paid", target_type="invoice", target_id=invoice.id, account_id=invoice.account_id,
        before={"status": InvoiceStatus.open.value},
        after={**_fields(invoice), "payment_id": str(payment_id), "payment_reference": reference},
    )
    await billing.payment_received(session, account)
    request_reconcile(account.id)  # the `billing` hold lifts
    return invoice


async def void(session: AsyncSession, *, invoice_id: uuid.UUID, reason: str) -> Invoice:
    """An admin voids an open invoice (issued by mistake, replaced): it is no longer owed. Voiding a void invoice
    changes nothing and answers it; a paid one is 409 `invoice_paid`. Not a payment: a `billing` hold an admin set
    stays."""
    _, invoice = await _locked_invoice(session, invoice_id)
    if invoice.status == InvoiceStatus.void:
        return invoice
    if invoice.status == InvoiceStatus.paid:
        raise Conflict("A paid invoice cannot be voided", code="invoice_paid")
    invoice.status, invoice.voided_at, invoice.void_reason = InvoiceStatus.void.value, utcnow(), reason
    await session.flush()
    await audit.record(
        session, action="invoice.voided", target_type="invoice", target_id=invoice.id,
        account_id=invoice.account_id, before={"status": InvoiceStatus.open.value},
        after={**_fields(invoice), "void_reason": reason},
    )
    request_reconcile(invoice.account_id)
    return invoice
