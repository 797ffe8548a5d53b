from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from jushostit.catalog.schemas import KnownCurrency
from jushostit.kit.schemas import (
    MINOR_UNITS_MAX,
    DateTime,
    DisplayName,
    MinorUnits,
    Note,
    RequestModel,
    ResponseModel,
)

DEFAULT_NET_DAYS = 30
MAX_LINES = 100

Quantity = Annotated[int, Field(ge=1, le=1_000_000, description="How many units; default 1")]
NetDays = Annotated[int, Field(ge=0, le=365, description="Due this many days after issue (0: on receipt)")]


class InvoiceLineCreate(RequestModel):
    description: Annotated[DisplayName, Field(description="What is billed, as printed on the invoice")]
    quantity: Quantity = 1
    unit_amount_minor: Annotated[MinorUnits, Field(description="Price of one unit, in the currency's minor units")]


class InvoiceCreate(RequestModel):
    """An invoice: its total is computed from the lines (`quantity * unit_amount_minor` each), in integers. Due
    at `due_at`, or `net_days` after it is issued (default 30); not both."""

    currency: KnownCurrency
    lines: list[InvoiceLineCreate] = Field(min_length=1, max_length=MAX_LINES)
    due_at: DateTime | None = Field(default=None, description="When it is due; not before now")
    net_days: NetDays = DEFAULT_NET_DAYS
    memo: Note | None = Field(default=None, description="Printed on the invoice: an order number, payment terms")

    @field_validator("lines")
    @classmethod
    def total_fits(cls, lines: list[InvoiceLineCreate]) -> list[InvoiceLineCreate]:
        """The total (and so each line) stays within the bound of any amount (10^15 minor units)."""
        if sum(line.quantity * line.unit_amount_minor for line in lines) > MINOR_UNITS_MAX:
            raise ValueError(f"the total must not exceed {MINOR_UNITS_MAX} minor units")
        return lines

    @model_validator(mode="after")
    def one_due_date(self) -> InvoiceCreate:
        if self.due_at is not None and "net_days" in self.model_fields_set:
            raise ValueError("give due_at or net_days, not both")
        return self


class InvoicePayment(RequestModel):
    """The off-platform payment of an invoice, as an operator records it (the invoice's total)."""

    reference: DisplayName | None = Field(default=None, description="The transfer's reference")


class InvoiceVoid(RequestModel):
    reason: Annotated[DisplayName, Field(description="Why it is void, for people reading it later")]


class InvoiceLineRead(ResponseModel):
    position: int
    description: str
    quantity: int
    unit_amount_minor: int
    amount_minor: int


class InvoiceRead(ResponseModel):
    id: uuid.UUID
    account_id: uuid.UUID
    number: str = Field(description="INV-<year>-<sequence>: numbered per year without gaps")
    status: str = Field(description="open | paid | void")
    overdue: bool = Field(description="Open and past its due date")
    currency: str
    currency_exponent: int
    total_minor: int
    total: str = Field(description="The total as a decimal with the currency's places, e.g. 1250.00")
    lines: list[InvoiceLineRead]
    memo: str | None
    issued_at: datetime
    due_at: datetime
    paid_at: datetime | None
    payment_reference: str | None
    voided_at: datetime | None
    void_reason: str | None


class InvoicePage(ResponseModel):
    items: list[InvoiceRead]
    next_cursor: str | None
