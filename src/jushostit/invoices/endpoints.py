"""Net-30 invoices: platform admins issue, mark paid and void them; owners and admins of the account read them,
as JSON or as a printable page."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from fastapi.responses import HTMLResponse, Response

from jushostit import container
from jushostit.auth.dependencies import (
    AccountAccess,
    PlatformAdmin,
    require_account,
    require_admin,
)
from jushostit.auth.scopes import Scope
from jushostit.credits.endpoints import IDEMPOTENCY_CONFLICTS
from jushostit.idempotency import IdempotencyDep
from jushostit.invoices import service
from jushostit.invoices.repository import InvoiceRepository
from jushostit.invoices.schemas import (
    InvoiceCreate,
    InvoiceLineRead,
    InvoicePage,
    InvoicePayment,
    InvoiceRead,
    InvoiceVoid,
)
from jushostit.kit import money
from jushostit.kit.db import SessionDep, utcnow
from jushostit.kit.errors import NotFound, conflicts, responses
from jushostit.kit.html import html_response, templates
from jushostit.kit.pagination import PageParams, Paging, split_page
from jushostit.models import Invoice, InvoiceStatus, Role

router = APIRouter(prefix="/v1", tags=["invoices"])

# As billing: owners and admins of the account read its invoices; members get 403, other tenants 404.
InvoiceReader = Annotated[AccountAccess, Depends(require_account(Scope.billing_read, Role.admin))]
StatusFilter = Annotated[InvoiceStatus | None, Query(alias="status", description="Only invoices in this state")]

_templates = templates("jushostit.invoices")


def invoice_read(invoice: Invoice, now: datetime) -> InvoiceRead:
    return InvoiceRead(
        id=invoice.id, account_id=invoice.account_id, number=invoice.number, status=invoice.status,
        overdue=invoice.status == InvoiceStatus.open and invoice.due_at <= now,
        currency=invoice.currency, currency_exponent=money.exponent(invoice.currency),
        total_minor=invoice.total_minor, total=money.format_minor(invoice.total_minor, invoice.currency),
        lines=[InvoiceLineRead.model_validate(line) for line in invoice.lines], memo=invoice.memo,
        issued_at=invoice.issued_at, due_at=invoice.due_at, paid_at=invoice.paid_at,
        payment_reference=invoice.payment_reference, voided_at=invoice.voided_at, void_reason=invoice.void_reason,
    )


def invoice_page(rows: list[Invoice], page: PageParams) -> InvoicePage:
    items, cursor = split_page(rows, page, "id")
    now = utcnow()
    return InvoicePage(items=[invoice_read(invoice, now) for invoice in items], next_cursor=cursor)


async def _invoice_of(session: SessionDep, account_id: uuid.UUID, invoice_id: uuid.UUID) -> Invoice:
    invoice = await InvoiceRepository(session).of_account(account_id, invoice_id)
    if invoice is None:
        raise NotFound("Invoice not found", code="invoice_not_found")
    return invoice


# --- customers ------------------------------------------------------------------------------------------------


@router.get("/accounts/{account_id}/invoices", response_model=InvoicePage, responses=responses(400, 401, 403, 404))
async def list_invoices(
    access: InvoiceReader, session: SessionDep, page: Paging, state: StatusFilter = None
) -> InvoicePage:
    """The account's invoices, newest first."""
    rows = await InvoiceRepository(session).newest_first(
        account_id=access.account.id, status=state, before=page.after_uuid(), limit=page.limit + 1
    )
    return invoice_page(rows, page)


@router.get(
    "/accounts/{account_id}/invoices/{invoice_id}", response_model=InvoiceRead, responses=responses(401, 403, 404)
)
async def get_invoice(invoice_id: uuid.UUID, access: InvoiceReader, session: SessionDep) -> InvoiceRead:
    return invoice_read(await _invoice_of(session, access.account.id, invoice_id), utcnow())


@router.get(
    "/accounts/{account_id}/invoices/{invoice_id}/html",
    response_class=Response,  # the page is HTML, its errors JSON like every other: both documented below
    responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "The printable page"},
               **responses(401, 403, 404)},
)
async def print_invoice(invoice_id: uuid.UUID, access: InvoiceReader, session: SessionDep) -> HTMLResponse:
    """The invoice as a page to print or save as PDF (a print stylesheet; no script)."""
    invoice = await _invoice_of(session, access.account.id, invoice_id)
    html = _templates.get_template("invoice.html").render(
        invoice=invoice_read(invoice, utcnow()), account=access.account,
        issuer=container.current().settings.invoice_issuer.splitlines(),
        amount=lambda minor: money.format_minor(minor, invoice.currency),
    )
    return html_response(html)


# --- platform admins ----------------------------------------------------------------------------------------------


@router.post(
    "/admin/accounts/{account_id}/invoices",
    status_code=status.HTTP_201_CREATED,
    response_model=InvoiceRead,
    tags=["admin"],
    responses={**responses(400, 401, 403, 404, 422), **conflicts({
        "billing_mode_not_invoice": "the account is not billed by invoice (`details.billing_mode`)",
        **IDEMPOTENCY_CONFLICTS,
    })},
)
async def create_invoice(
    account_id: uuid.UUID, body: InvoiceCreate, admin: PlatformAdmin, session: SessionDep,
    idempotency: IdempotencyDep,
) -> Response:
    """Issues an invoice now, numbered `INV-<year>-<sequence>` (per year, without gaps), its total computed from
    the lines. Due at `due_at`, or `net_days` (default 30) after now; 400 `due_date_in_past`. Open and past its
    due date, it makes the account past due from that date, suspended (`billing`) once the dunning policy's grace
    has run out. Audited. Honours `Idempotency-Key`."""
    async def run() -> InvoiceRead:
        invoice = await service.create(
            session, account_id=account_id, currency=body.currency, lines=body.lines, due_at=body.due_at,
            net_days=body.net_days, memo=body.memo, created_by=admin.user.id,
        )
        return invoice_read(invoice, utcnow())

    return await idempotency.run(
        session, principal_id=admin.user.id, body=body, status_code=status.HTTP_201_CREATED, action=run
    )


@router.get(
    "/admin/invoices", response_model=InvoicePage, tags=["admin"], dependencies=[Depends(require_admin())],
    responses=responses(400, 401, 403),
)
async def list_all_invoices(
    session: SessionDep, page: Paging, state: StatusFilter = None,
    account_id: Annotated[uuid.UUID | None, Query(description="Only this account's invoices")] = None,
) -> InvoicePage:
    """Every account's invoices, newest first."""
    rows = await InvoiceRepository(session).newest_first(
        account_id=account_id, status=state, before=page.after_uuid(), limit=page.limit + 1
    )
    return invoice_page(rows, page)


@router.post(
    "/admin/invoices/{invoice_id}/mark-paid",
    response_model=InvoiceRead,
    tags=["admin"],
    responses={**responses(401, 403, 404, 422), **conflicts({"invoice_void": "a void invoice cannot be paid"})},
)
async def mark_invoice_paid(
    invoice_id: uuid.UUID, body: InvoicePayment, admin: PlatformAdmin, session: SessionDep
) -> InvoiceRead:
    """Records the off-platform payment of the invoice's total (one `payments` row): the invoice is paid and the
    `billing` hold it caused lifts. Marking a paid invoice again adds nothing and answers it as it is. Audited."""
    invoice = await service.mark_paid(
        session, invoice_id=invoice_id, reference=body.reference, recorded_by=admin.user.id
    )
    return invoice_read(invoice, utcnow())


@router.post(
    "/admin/invoices/{invoice_id}/void",
    response_model=InvoiceRead,
    tags=["admin"],
    responses={**responses(401, 403, 404, 422), **conflicts({"invoice_paid": "a paid invoice cannot be voided"})},
)
async def void_invoice(invoice_id: uuid.UUID, body: InvoiceVoid, admin: PlatformAdmin, session: SessionDep) -> InvoiceRead:
    """Voids an open invoice: it is no longer owed (and no longer makes the account past due). Voiding a void
    invoice changes nothing. Audited."""
    return invoice_read(await service.void(session, invoice_id=invoice_id, reason=body.reason), utcnow())
