"""Plans and service templates: seeding the shipped ones, and the admin changes. Never commits."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit
from jushostit.catalog import loader
from jushostit.catalog.repository import CatalogRepository
from jushostit.catalog.schemas import PlanUpdate
from jushostit.catalog.spec import PlanSpec, SeatTemplateSpec, TemplateSpec, parse_template
from jushostit.kit import context, money
from jushostit.kit.db import utcnow
from jushostit.kit.errors import Conflict, NotFound
from jushostit.models import Plan, ServiceTemplate


@dataclass
class SeedReport:
    plans_added: list[str] = field(default_factory=list)
    templates_added: list[str] = field(default_factory=list)
    templates_updated: list[str] = field(default_factory=list)


def _plan_values(spec: PlanSpec) -> dict[str, Any]:
    return {
        "code": spec.code,
        "name": spec.name,
        "price_minor": spec.price_minor,
        "currency": spec.currency,
        "interval": spec.interval,
        "billing_modes": list(spec.billing_modes),
        "quotas": spec.quotas.model_dump(),
        "default_budget_minor": spec.default_budget_minor,
        "included_credits": spec.included_credits,
        "credits_rollover": spec.credits_rollover,
        "credits_rollover_cap": spec.credits_rollover_cap,
        "stripe_price_id": spec.stripe_price_id,
        "usage_pricing": spec.usage_pricing.model_dump(mode="json") if spec.usage_pricing else None,
    }


def _template_document(spec: TemplateSpec | SeatTemplateSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


async def seed(session: AsyncSession, directory: Traversable | None = None) -> SeedReport:
    """Insert the shipped plans that are missing (an existing plan is never overwritten: admins own prices
    after the first start) and upsert the shipped templates (they are code). Safe to run on every start and
    from several processes at once. A broken file raises loader.CatalogError before anything is written."""
    plans = loader.load_plans(directory)
    templates = loader.load_templates(directory)
    for index, plan in enumerate(plans):
        if not money.is_known(plan.currency):  # prices are shown with the currency's exponent
            raise loader.CatalogError(f"plans.yaml[{index}]: currency: unknown currency {plan.currency!r}")
    repository = CatalogRepository(session)
    report = SeedReport()
    for plan in plans:
        values = _plan_values(plan)
        plan_id = await repository.insert_plan_if_missing(values)
        if plan_id is not None:
            report.plans_added.append(plan.code)
            await audit.record(session, action="plan.seeded", target_type="plan", target_id=plan_id,
                               after=values, actor=context.SYSTEM)
    for template in templates:
        document = _template_document(template)
        inserted = await repository.upsert_builtin_template(template.code, template.kind, document)
        if inserted is None:
            continue
        (report.templates_added if inserted else report.templates_updated).append(template.code)
        await audit.record(session, action="template.seeded" if inserted else "template.updated",
                           target_type="template", target_id=template.code, after={"spec": document},
                           actor=context.SYSTEM)
    return report


# --- plans ------------------------------------------------------------------------------------------------


async def create_plan(session: AsyncSession, *, data: PlanSpec) -> Plan:
    repository = CatalogRepository(session)
    values = _plan_values(data)
    if await repository.insert_plan_if_missing(values) is None:
        raise Conflict(f"A plan with the code {data.code!r} already exists", code="plan_exists")
    plan = await repository.plan_by_code(data.code)
    assert plan is not None
    await audit.record(session, action="plan.created", target_type="plan", target_id=plan.id, after=values)
    return plan


async def _plan_for_update(repository: CatalogRepository, code: str) -> Plan:
    plan = await repository.plan_by_code(code, for_update=True)
    if plan is None:
        raise NotFound("Plan not found", code="plan_not_found")
    return plan


# What a subscription buys and keeps: a change of any of these makes a new version of the plan.
SOLD_TERMS = ("price_minor", "currency", "interval", "quotas", "stripe_price_id")


async def update_plan(session: AsyncSession, *, code: str, data: PlanUpdate) -> Plan:
    plan = await _plan_for_update(CatalogRepository(session), code)
    changes = data.model_dump(exclude_unset=True)
    if data.usage_pricing is not None:  # stored as JSON: its Decimals as exact strings
        changes["usage_pricing"] = data.usage_pricing.model_dump(mode="json")
    before = {name: getattr(plan, name) for name in changes}
    for name, value in changes.items():
        setattr(plan, name, value)
    after = {name: getattr(plan, name) for name in changes}
    if before != after:
        if any(before[name] != after[name] for name in SOLD_TERMS if name in changes):
            # What subscriptions buy changed: a new version, for new subscribers only.
            before["version"], plan.version = plan.version, plan.version + 1
            after["version"] = plan.version
        await session.flush()
        await audit.record(session, action="plan.updated", target_type="plan", target_id=plan.id,
                           before=before, after=after)
    return plan


async def retire_plan(session: AsyncSession, *, code: str) -> Plan:
    """A retired plan keeps its subscribers (they renew as before) but can no longer be checked out."""
    plan = await _plan_for_update(CatalogRepository(session), code)
    if plan.retired_at is None:
        plan.retired_at = utcnow()
        await session.flush()
        await audit.record(session, action="plan.retired", target_type="plan", target_id=plan.id,
                           after={"code": plan.code, "retired_at": plan.retired_at.isoformat()})
    return plan


# --- templates --------------------------------------------------------------------------------------------


def template_spec(template: ServiceTemplate) -> TemplateSpec | SeatTemplateSpec:
    return parse_template(template.spec)


async def create_template(session: AsyncSession, *, data: TemplateSpec | SeatTemplateSpec) -> ServiceTemplate:
    repository = CatalogRepository(session)
    # Stored as the plain spec: the admin-only checks of the request model are not part of the document.
    document = parse_template(data.model_dump()).model_dump(mode="json")
    if await repository.insert_template_if_missing(data.code, data.kind, document, "admin") is None:
        raise Conflict(f"A template with the code {data.code!r} already exists", code="template_exists")
    template = await repository.template_by_code(data.code)
    assert template is not None
    await audit.record(session, action="template.created", target_type="template", target_id=template.code,
                       after={"spec": document})
    return template
