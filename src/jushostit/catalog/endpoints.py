from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, status

from jushostit import container
from jushostit.auth.dependencies import public, require_admin
from jushostit.catalog import service
from jushostit.catalog.availability import unavailable_reason
from jushostit.catalog.loader import load_credit_packs
from jushostit.catalog.repository import CatalogRepository
from jushostit.catalog.schemas import (
    CatalogItem,
    CatalogPage,
    CreditPackList,
    CreditPackRead,
    PlanAdminPage,
    PlanAdminRead,
    PlanCreateBody,
    PlanPage,
    PlanRead,
    PlanUpdate,
    TemplateAdminPage,
    TemplateAdminRead,
)
from jushostit.catalog.spec import PlanQuotas, TemplateSpec, UsagePricing
from jushostit.kit import money
from jushostit.kit.db import SessionDep
from jushostit.kit.errors import responses
from jushostit.kit.pagination import Paging, split_page
from jushostit.models import Plan, ServiceTemplate

router = APIRouter(prefix="/v1", tags=["catalog"])

PlanCode = Annotated[str, Path(pattern=r"^[a-z][a-z0-9-]{0,62}$", max_length=63)]
Admin = [Depends(require_admin())]


def plan_read(plan: Plan) -> PlanRead:
    return PlanRead(**_plan_fields(plan))


def plan_admin_read(plan: Plan) -> PlanAdminRead:
    return PlanAdminRead(
        **_plan_fields(plan),
        id=plan.id,
        stripe_price_id=plan.stripe_price_id,
        retired_at=plan.retired_at,
        created_at=plan.created_at,
    )


def _plan_fields(plan: Plan) -> dict[str, object]:
    return {
        "code": plan.code,
        "version": plan.version,
        "name": plan.name,
        "price_minor": plan.price_minor,
        "currency": plan.currency,
        "currency_exponent": money.exponent(plan.currency),
        "price": money.format_minor(plan.price_minor, plan.currency),
        "interval": plan.interval,
        "billing_modes": plan.billing_modes,
        "quotas": PlanQuotas.model_validate(plan.quotas),
        "default_budget_minor": plan.default_budget_minor,
        "included_credits": plan.included_credits,
        "credits_rollover": plan.credits_rollover,
        "credits_rollover_cap": plan.credits_rollover_cap,
        "usage_pricing": UsagePricing.model_validate(plan.usage_pricing) if plan.usage_pricing else None,
    }


def catalog_item(template: ServiceTemplate, runtime: str) -> CatalogItem:
    spec = service.template_spec(template)
    unavailable = unavailable_reason(spec, runtime)
    workload = spec if isinstance(spec, TemplateSpec) else None
    return CatalogItem(
        code=spec.code,
        name=spec.name,
        kind=spec.kind,
        description=spec.description,
        tiers=workload.tiers if workload else {},
        default_tier=workload.default_tier if workload else None,
        runs_locally=workload is not None and workload.process is not None,
        available=unavailable is None,
        unavailable_reason=unavailable,
    )


def template_admin_read(template: ServiceTemplate) -> TemplateAdminRead:
    return TemplateAdminRead(
        id=template.id,
        code=template.code,
        kind=template.kind,
        source=template.source,
        retired_at=template.retired_at,
        created_at=template.created_at,
        spec=service.template_spec(template),
    )


# --- public -----------------------------------------------------------------------------------------------


@router.get("/plans", response_model=PlanPage, dependencies=[Depends(public())], responses=responses(400))
async def list_plans(session: SessionDep, page: Paging) -> PlanPage:
    """The plans that can be checked out (retired plans are hidden)."""
    rows = await CatalogRepository(session).plans(include_retired=False, after=page.after, limit=page.limit + 1)
    items, cursor = split_page(rows, page, "code")
    return PlanPage(items=[plan_read(p) for p in items], next_cursor=cursor)


@router.get("/credit-packs", response_model=CreditPackList, dependencies=[Depends(public())])
async def list_credit_packs() -> CreditPackList:
    """Credits sold once, bought with `POST /v1/accounts/{id}/credit-packs/{code}/purchase`."""
    return CreditPackList(items=[
        CreditPackRead(code=pack.code, name=pack.name, credits=pack.credits, price_minor=pack.price_minor,
                       currency=pack.currency, price=money.format_minor(pack.price_minor, pack.currency),
                       billing_modes=list(pack.billing_modes))
        for pack in load_credit_packs()
    ])


@router.get("/catalog", response_model=CatalogPage, dependencies=[Depends(public())], responses=responses(400))
async def list_catalog(session: SessionDep, page: Paging) -> CatalogPage:
    """The services that can be ordered; `available: false` (with `unavailable_reason`) marks those this
    server's runtime cannot run, which ordering refuses."""
    rows = await CatalogRepository(session).templates(include_retired=False, after=page.after, limit=page.limit + 1)
    items, cursor = split_page(rows, page, "code")
    runtime = container.current().settings.runtime
    return CatalogPage(items=[catalog_item(t, runtime) for t in items], next_cursor=cursor)


# --- admin ------------------------------------------------------------------------------------------------


@router.get(
    "/admin/plans", response_model=PlanAdminPage, dependencies=Admin, tags=["admin"],
    responses=responses(400, 401, 403),
)
async def admin_list_plans(session: SessionDep, page: Paging) -> PlanAdminPage:
    """Every plan, retired ones included."""
    rows = await CatalogRepository(session).plans(include_retired=True, after=page.after, limit=page.limit + 1)
    items, cursor = split_page(rows, page, "code")
    return PlanAdminPage(items=[plan_admin_read(p) for p in items], next_cursor=cursor)


@router.post(
    "/admin/plans", status_code=status.HTTP_201_CREATED, response_model=PlanAdminRead, dependencies=Admin,
    tags=["admin"], responses=responses(401, 403, 409, 422),
)
async def admin_create_plan(body: PlanCreateBody, session: SessionDep) -> PlanAdminRead:
    return plan_admin_read(await service.create_plan(session, data=body))


@router.patch(
    "/admin/plans/{plan_code}", response_model=PlanAdminRead, dependencies=Admin, tags=["admin"],
    responses=responses(401, 403, 404, 422),
)
async def admin_update_plan(plan_code: PlanCode, body: PlanUpdate, session: SessionDep) -> PlanAdminRead:
    """Price changes apply to new checkouts and renewals; current periods keep what they were sold at."""
    return plan_admin_read(await service.update_plan(session, code=plan_code, data=body))


@router.post(
    "/admin/plans/{plan_code}/retire", response_model=PlanAdminRead, dependencies=Admin, tags=["admin"],
    responses=responses(401, 403, 404),
)
async def admin_retire_plan(plan_code: PlanCode, session: SessionDep) -> PlanAdminRead:
    """Hidden from /v1/plans and refused at checkout; its subscribers keep it. Retiring twice changes nothing."""
    return plan_admin_read(await service.retire_plan(session, code=plan_code))


@router.get(
    "/admin/templates", response_model=TemplateAdminPage, dependencies=Admin, tags=["admin"],
    responses=responses(400, 401, 403),
)
async def admin_list_templates(session: SessionDep, page: Paging) -> TemplateAdminPage:
    rows = await CatalogRepository(session).templates(include_retired=True, after=page.after, limit=page.limit + 1)
    items, cursor = split_page(rows, page, "code")
    return TemplateAdminPage(items=[template_admin_read(t) for t in items], next_cursor=cursor)
