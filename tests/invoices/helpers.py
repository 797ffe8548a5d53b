"""Small helpers shared by the invoice tests."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from jushostit.models import Account, AuditEntry, BillingMode, Invoice, InvoiceCounter, InvoiceLine, Payment

LINES = [
    {"description": "Managed hosting, December", "quantity": 3, "unit_amount_minor": 4900},
    {"description": "Setup", "unit_amount_minor": 15000},
]


async def invoiced(session, signup, name: str = "Net Thirty Co") -> Any:
    """A signed-up owner whose account an operator bills by invoice."""
    owner = await signup(account_name=name)
    account = await session.get(Account, uuid.UUID(owner.account_id))
    account.billing_mode = BillingMode.invoice
    await session.flush()
    return owner


async def issue(client, headers: dict[str, str], owner, **body: Any) -> dict[str, Any]:
    """An invoice an operator (`headers`) issues to `owner`'s account: LINES in EUR, unless `body` says otherwise."""
    response = await client.post(f"/v1/admin/accounts/{owner.account_id}/invoices",
                                 json={"currency": "EUR", "lines": LINES, **body}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def row_counts(session) -> dict[str, int]:
    """Rows an invoice change could touch (every change also writes an audit entry)."""
    tables = (Invoice, InvoiceLine, InvoiceCounter, Payment, AuditEntry)
    return {table.__name__: await session.scalar(select(func.count()).select_from(table)) for table in tables}


async def audit_of(session, action: str, invoice_id: str) -> list[AuditEntry]:
    stmt = select(AuditEntry).where(AuditEntry.action == action, AuditEntry.target_id == invoice_id)
    return list((await session.scalars(stmt.order_by(AuditEntry.seq))).all())


async def payments_of(session, invoice_id: str) -> list[Payment]:
    return list((await session.scalars(select(Payment).where(Payment.invoice_id == uuid.UUID(invoice_id)))).all())
