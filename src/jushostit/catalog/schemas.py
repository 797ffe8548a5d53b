from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from jushostit.catalog.spec import (
    BillingModes,
    CreditAmount,
    Currency,
    Name,
    PlanQuotas,
    PlanSpec,
    Resources,
    SeatTemplateSpec,
    StripePriceId,
    TemplateSpec,
    UsagePricing,
)
from jushostit.kit import money
from jushostit.kit.schemas import MinorUnits, RequestModel, ResponseModel, not_nullable

M = TypeVar("M", bound=BaseModel)


def refuse_nul(value: Any) -> Any:
    """PostgreSQL text and JSONB cannot hold NUL characters: refuse them anywhere in a document (a 422)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_nul(key)
            refuse_nul(item)
    elif isinstance(value, list):
        for item in value:
            refuse_nul(item)
    return value


def strictly(model: type[M]) -> WrapValidator:
    """Validates `model` in strict mode all the way down (nested specs included): no coercion of `"9"` to 9
    or of `1.0` to 1; unknown fields are already refused by the specs themselves. Use as
    `Annotated[Model, strictly(Model)]`."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if isinstance(value, dict):
            return model.model_validate(refuse_nul(value), strict=True)
        return handler(value)

    return WrapValidator(validate)


def _known_currency(value: str) -> str:
    if not money.is_known(value):
        raise ValueError(f"unknown currency {value!r}")
    return value


# A currency a request may name: one whose exponent we know (amounts are shown with it).
KnownCurrency = Annotated[Currency, AfterValidator(_known_currency)]


# --- plans ------------------------------------------------------------------------------------------------


class PlanCreate(PlanSpec):
    """A new plan (PlanSpec) from the admin API; the currency must be one we know the exponent of."""

    @field_validator("currency")
    @classmethod
    def known_currency(cls, value: str) -> str:
        return _known_currency(value)


StrictQuotas = Annotated[PlanQuotas, strictly(PlanQuotas)]

_NOT_NULL = (
    "name", "price_minor", "currency", "interval", "billing_modes", "quotas", "included_credits", "credits_rollover",
)


class PlanUpdate(RequestModel):
    """Only the fields given change. The code never changes; `default_budget_minor`, `credits_rollover_cap`,
    `stripe_price_id` and `usage_pricing` may be set to null, the other fields may not. Credit changes apply from
    the next period; a change of usage pricing prices the current month's usage from the next aggregation on."""

    model_config = ConfigDict(json_schema_extra=not_nullable(*_NOT_NULL))
    name: Name | None = None
    price_minor: MinorUnits | None = None
    currency: Currency | None = None
    interval: Literal["month", "year"] | None = None
    billing_modes: BillingModes | None = None
    quotas: StrictQuotas | None = None
    default_budget_minor: MinorUnits | None = None
    included_credits: CreditAmount | None = None
    credits_rollover: bool | None = None
    credits_rollover_cap: CreditAmount | None = None
    stripe_price_id: StripePriceId | None = None
    usage_pricing: UsagePricing | None = None

    @field_validator("currency")
    @classmethod
    def known_currency(cls, value: str | None) -> str | None:
        return None if value is None else _known_currency(value)

    @model_validator(mode="after")
    def not_null(self) -> PlanUpdate:
        nulls = [f for f in _NOT_NULL if f in self.model_fields_set and getattr(self, f) is None]
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null")
        return self


class PlanRead(ResponseModel):
    code: str
    version: int = Field(description="Raised by each change of price, currency, interval, quotas or Stripe price: "
                                     "subscriptions keep the version they were sold")
    name: str
    price_minor: int
    currency: str
    currency_exponent: int
    price: str  # price_minor in major units, e.g. "9.00" for 900 EUR (display only; compute in minor units)
    interval: str
    billing_modes: list[str]
    quotas: PlanQuotas
    default_budget_minor: int | None
    included_credits: int = Field(description="Credits each paid period brings")
    credits_rollover: bool = Field(description="What is left carries into the next period (else it expires)")
    credits_rollover_cap: int | None = Field(description="At most this many carried over; null: no cap")
    usage_pricing: UsagePricing | None = Field(description="What usage costs beyond what the plan includes; "
                                                           "null: usage is measured, not charged")


class PlanAdminRead(PlanRead):
    id: uuid.UUID
    stripe_price_id: str | None
    retired_at: datetime | None
    created_at: datetime


class CreditPackRead(ResponseModel):
    code: str
    name: str
    credits: int
    price_minor: int
    currency: str
    price: str  # price_minor in major units (display only)
    billing_modes: list[str]


class CreditPackList(ResponseModel):
    items: list[CreditPackRead]


class PlanPage(ResponseModel):
    items: list[PlanRead]
    next_cursor: str | None


class PlanAdminPage(ResponseModel):
    items: list[PlanAdminRead]
    next_cursor: str | None


PlanCreateBody = Annotated[PlanCreate, strictly(PlanCreate)]


# --- templates --------------------------------------------------------------------------------------------


class CatalogItem(ResponseModel):
    code: str
    name: str
    kind: str
    description: str
    tiers: dict[str, Resources] = Field(description="Sizes it can be ordered in (none for a seat)")
    default_tier: str | None = Field(description="The tier an order without one gets (null for a seat)")
    runs_locally: bool  # has a `process` form, so the local runtime can run it
    available: bool = Field(description="This server's runtime can run it; otherwise ordering it is refused "
                            "(409 `template_unavailable`)")
    unavailable_reason: str | None = Field(description="Why it cannot run here (null when available)")


class CatalogPage(ResponseModel):
    items: list[CatalogItem]
    next_cursor: str | None


class TemplateCreate(TemplateSpec):
    """A new template from the admin API. A `process` form is a command run on the control plane's host, so
    only templates shipped in the package (code, reviewed) may have one."""

    @field_validator("process")
    @classmethod
    def no_process(cls, value: object) -> None:
        if value is not None:
            raise ValueError("only templates shipped with JusHostIt may have a process form (local runtime)")


def _by_kind(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Validated strictly as the model its `kind` names, so an error names the field as the request spells it
    (`body.port`), not the union's branch."""
    if isinstance(value, dict):
        model: type[TemplateCreate | SeatTemplateSpec] = SeatTemplateSpec if value.get("kind") == "seat" else TemplateCreate
        return model.model_validate(refuse_nul(value), strict=True)
    return handler(value)


# An app (or browser pool) template, or a seat template naming a registered platform, told apart by `kind`.
TemplateCreateBody = Annotated[TemplateCreate | SeatTemplateSpec, WrapValidator(_by_kind)]


class TemplateAdminRead(ResponseModel):
    id: uuid.UUID
    code: str
    kind: str
    source: str
    retired_at: datetime | None
    created_at: datetime
    spec: TemplateSpec | SeatTemplateSpec = Field(discriminator="kind")


class TemplateAdminPage(ResponseModel):
    items: list[TemplateAdminRead]
    next_cursor: str | None
