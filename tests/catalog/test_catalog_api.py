"""GET /v1/plans, GET /v1/catalog (public) and the admin API for plans and templates."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from sqlalchemy import select

from jushostit.catalog import loader
from jushostit.models import AuditEntry, Plan, ServiceTemplate

BUILTIN_PLANS = ["enterprise", "free", "pro", "starter"]
BUILTIN_TEMPLATES = {"browserless", "ghost", "n8n", "static-site", "wordpress"}


def _error(response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def _locs(error: dict[str, Any]) -> list[list[Any]]:
    return [d["loc"] for d in error["details"]]


async def _all_pages(client, path: str, limit: int, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = await client.get(path, params=params, headers=headers)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


def _plan_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "code": f"test-{uuid.uuid4().hex[:8]}",
        "name": "Test plan",
        "price_minor": 1500,
        "currency": "EUR",
        "interval": "month",
        "billing_modes": ["card", "invoice"],
        "quotas": {"cpu_millicores": 1000, "memory_mib": 1024, "storage_gib": 5, "max_instances": 2},
        "default_budget_minor": 3000,
        "stripe_price_id": None,
    }
    body.update(overrides)
    return body


def _template_body(code: str | None = None) -> dict[str, Any]:
    spec = next(s for s in loader.load_templates() if s.code == "n8n").model_dump(mode="json")
    spec["code"] = code or f"tpl-{uuid.uuid4().hex[:8]}"
    spec["name"] = "Custom n8n"
    return spec


# --- public -----------------------------------------------------------------------------------------------


async def test_plans_are_public_and_show_prices_in_minor_units(client) -> None:
    response = await client.get("/v1/plans")  # no Authorization header
    assert response.status_code == 200, response.text
    plans = {p["code"]: p for p in response.json()["items"]}
    assert set(BUILTIN_PLANS) <= set(plans)
    starter = plans["starter"]
    assert starter == {
        "code": "starter",
        "version": 1,
        "name": "Starter",
        "price_minor": 900,
        "currency": "EUR",
        "currency_exponent": 2,
        "price": "9.00",
        "interval": "month",
        "billing_modes": ["card", "invoice", "prepaid"],
        "quotas": {"cpu_millicores": 2000, "memory_mib": 2048, "storage_gib": 10, "max_instances": 3,
                   "concurrent_sessions": 2, "session_max_minutes": 30},
        "default_budget_minor": 5000,
        "included_credits": 0,
        "credits_rollover": False,
        "credits_rollover_cap": None,
        "usage_pricing": None,  # usage is measured, not charged
    }
    assert plans["free"]["price_minor"] == 0 and plans["free"]["billing_modes"] == ["free"]
    # Paginated by code, the pages together are the same list.
    paged = await _all_pages(client, "/v1/plans", limit=1)
    assert [p["code"] for p in paged] == sorted(plans)


async def test_catalog_is_public_and_says_what_runs_locally(client) -> None:
    response = await client.get("/v1/catalog")
    assert response.status_code == 200, response.text
    items = {t["code"]: t for t in response.json()["items"]}
    assert BUILTIN_TEMPLATES <= set(items)
    assert {c for c in BUILTIN_TEMPLATES if items[c]["runs_locally"]} == {"static-site"}
    shipped = {s.code: s for s in loader.load_templates()}
    for code in BUILTIN_TEMPLATES:
        item, spec = items[code], shipped[code]
        assert set(item) == {"code", "name", "kind", "description", "tiers", "default_tier", "runs_locally",
                             "available", "unavailable_reason"}
        assert (item["name"], item["kind"], item["default_tier"]) == (spec.name, spec.kind, spec.default_tier)
        assert item["tiers"] == {k: v.model_dump() for k, v in spec.tiers.items()}
        assert "env" not in item and "image" not in item  # the public catalog shows no internals
    assert [t["code"] for t in await _all_pages(client, "/v1/catalog", limit=2)] == sorted(items)


async def test_the_catalog_marks_the_templates_this_runtime_cannot_run(client) -> None:
    items = {t["code"]: t for t in (await client.get("/v1/catalog", params={"limit": 100})).json()["items"]}
    assert (items["static-site"]["available"], items["static-site"]["unavailable_reason"]) == (True, None)
    for code in BUILTIN_TEMPLATES - {"static-site"}:  # container images: the local runtime runs processes only
        assert (items[code]["available"], items[code]["unavailable_reason"]) == (
            False, "template not runnable on the local runtime"), code


# --- admin: plans -----------------------------------------------------------------------------------------


async def test_admin_creates_updates_and_retires_a_plan_with_audit_entries(client, session, signup, admin) -> None:
    boss = await admin()
    body = _plan_body()
    created = await client.post("/v1/admin/plans", json=body, headers=boss.headers)
    assert created.status_code == 201, created.text
    plan = created.json()
    assert plan["code"] == body["code"] and plan["price_minor"] == 1500 and plan["retired_at"] is None
    assert plan["stripe_price_id"] is None and plan["price"] == "15.00"
    public = {p["code"] for p in (await client.get("/v1/plans", params={"limit": 200})).json()["items"]}
    assert body["code"] in public
    _error(await client.post("/v1/admin/plans", json=body, headers=boss.headers), 409, "plan_exists")

    updated = await client.patch(
        f"/v1/admin/plans/{body['code']}",
        json={"price_minor": 1900, "stripe_price_id": "price_123", "quotas": {**body["quotas"], "max_instances": 5}},
        headers=boss.headers,
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["price_minor"] == 1900 and updated.json()["stripe_price_id"] == "price_123"
    assert updated.json()["quotas"]["max_instances"] == 5
    # Setting a nullable field back to null is allowed; an unchanged PATCH records nothing.
    cleared = await client.patch(
        f"/v1/admin/plans/{body['code']}", json={"stripe_price_id": None}, headers=boss.headers
    )
    assert cleared.status_code == 200 and cleared.json()["stripe_price_id"] is None
    same = await client.patch(f"/v1/admin/plans/{body['code']}", json={"price_minor": 1900}, headers=boss.headers)
    assert same.status_code == 200

    retired = await client.post(f"/v1/admin/plans/{body['code']}/retire", headers=boss.headers)
    assert retired.status_code == 200 and retired.json()["retired_at"] is not None
    again = await client.post(f"/v1/admin/plans/{body['code']}/retire", headers=boss.headers)
    assert again.status_code == 200 and again.json()["retired_at"] == retired.json()["retired_at"]
    public = {p["code"] for p in (await client.get("/v1/plans", params={"limit": 200})).json()["items"]}
    assert body["code"] not in public and set(BUILTIN_PLANS) <= public
    listed = {p["code"]: p for p in await _all_pages(client, "/v1/admin/plans", 2, headers=boss.headers)}
    assert listed[body["code"]]["retired_at"] == retired.json()["retired_at"]

    entries = (
        await session.scalars(select(AuditEntry).where(AuditEntry.target_id == plan["id"]).order_by(AuditEntry.seq))
    ).all()
    assert [e.action for e in entries] == ["plan.created", "plan.updated", "plan.updated", "plan.retired"]
    assert all(e.actor_id == uuid.UUID(boss.user_id) for e in entries)
    assert entries[1].before == {
        "price_minor": 1500, "stripe_price_id": None,
        "quotas": {**body["quotas"], "concurrent_sessions": 0, "session_max_minutes": 0}, "version": 1,
    }
    assert entries[1].after["price_minor"] == 1900 and entries[1].after["quotas"]["max_instances"] == 5
    assert (entries[1].after["version"], entries[2].after["version"]) == (2, 3)  # each change of terms: a version
    assert listed[body["code"]]["version"] == 3


async def test_admin_plan_input_is_strict_and_a_refusal_changes_nothing(client, session, admin) -> None:
    boss = await admin()
    cases = [
        (_plan_body(currency="XYZ"), ["body", "currency"]),
        (_plan_body(price_minor="1500"), ["body", "price_minor"]),
        (_plan_body(price_minor=15.5), ["body", "price_minor"]),
        (_plan_body(price_minor=-1), ["body", "price_minor"]),
        (_plan_body(interval="week"), ["body", "interval"]),
        (_plan_body(billing_modes=[]), ["body", "billing_modes"]),
        (_plan_body(quotas={"cpu_millicores": "1", "memory_mib": 1, "storage_gib": 1, "max_instances": 1}),
         ["body", "quotas", "cpu_millicores"]),
        (_plan_body(retired_at="2020-01-01T00:00:00Z"), ["body", "retired_at"]),
        (_plan_body(code="Not A Code"), ["body", "code"]),
    ]
    for body, loc in cases:
        error = _error(await client.post("/v1/admin/plans", json=body, headers=boss.headers), 422, "validation_error")
        assert loc in _locs(error), (body, error)
        assert await session.scalar(select(Plan).where(Plan.code == body["code"])) is None

    code = "starter"
    for patch, loc in [
        ({"name": None}, ["body"]),
        ({"price_minor": "900"}, ["body", "price_minor"]),
        ({"code": "renamed"}, ["body", "code"]),
        ({"quotas": {"cpu_millicores": 1}}, ["body", "quotas", "memory_mib"]),
        ({"name": "nul \x00 inside"}, ["body", "name"]),
    ]:
        error = _error(await client.patch(f"/v1/admin/plans/{code}", json=patch, headers=boss.headers), 422)
        assert loc in _locs(error), (patch, error)
    session.expire_all()
    starter = await session.scalar(select(Plan).where(Plan.code == "starter"))
    assert (starter.name, starter.price_minor) == ("Starter", 900)
    _error(await client.patch("/v1/admin/plans/no-such-plan", json={"price_minor": 1}, headers=boss.headers), 404,
           "plan_not_found")
    _error(await client.post("/v1/admin/plans/no-such-plan/retire", headers=boss.headers), 404, "plan_not_found")


async def test_plan_admin_routes_refuse_account_owners(client, signup) -> None:
    owner = await signup()
    _error(await client.post("/v1/admin/plans", json=_plan_body(), headers=owner.headers), 403, "admin_required")
    _error(await client.post("/v1/admin/plans/free/retire", headers=owner.headers), 403, "admin_required")
    _error(await client.get("/v1/admin/templates", headers=owner.headers), 403, "admin_required")


# --- admin: templates -------------------------------------------------------------------------------------


async def test_admin_adds_a_template_that_the_catalog_then_offers(client, session, admin) -> None:
    boss = await admin()
    body = _template_body()
    created = await client.post("/v1/admin/templates", json=body, headers=boss.headers)
    assert created.status_code == 201, created.text
    assert created.json()["source"] == "admin" and created.json()["spec"]["code"] == body["code"]
    catalog = {t["code"]: t for t in (await client.get("/v1/catalog", params={"limit": 200})).json()["items"]}
    assert catalog[body["code"]]["runs_locally"] is False and catalog[body["code"]]["name"] == "Custom n8n"
    listed = {t["code"]: t for t in await _all_pages(client, "/v1/admin/templates", 3, headers=boss.headers)}
    assert listed[body["code"]]["source"] == "admin" and listed["n8n"]["source"] == "builtin"
    assert listed["static-site"]["spec"]["process"] is not None

    _error(await client.post("/v1/admin/templates", json=body, headers=boss.headers), 409, "template_exists")
    entry = await session.scalar(
        select(AuditEntry).where(AuditEntry.action == "template.created", AuditEntry.target_id == body["code"])
    )
    assert entry is not None and entry.actor_id == uuid.UUID(boss.user_id) and entry.after["spec"]["image"]


async def test_a_broken_template_is_refused_with_422_naming_the_field(client, session, admin) -> None:
    boss = await admin()

    def broken(edit) -> dict[str, Any]:
        body = _template_body()
        edit(body)
        return body

    static = next(s for s in loader.load_templates() if s.code == "static-site").model_dump(mode="json")
    appended = len(_template_body()["env"])
    cases = [
        (broken(lambda b: b.update(port="5678")), ["body", "port"]),
        (broken(lambda b: b.update(uid=0)), ["body", "uid"]),
        (broken(lambda b: b.pop("readiness")), ["body", "readiness"]),
        (broken(lambda b: b["tiers"]["small"].update(cpu_limit_millicores="x")),
         ["body", "tiers", "small", "cpu_limit_millicores"]),
        (broken(lambda b: b["env"].append({"name": "BAD-NAME", "value": "x"})), ["body", "env", appended, "name"]),
        (broken(lambda b: b.update(surprise=True)), ["body", "surprise"]),
        (broken(lambda b: b.update(description="nul \x00 inside")), ["body"]),
        # A process form is a command on the control plane's host: only shipped templates may have one.
        ({**copy.deepcopy(static), "code": f"tpl-{uuid.uuid4().hex[:8]}"}, ["body", "process"]),
    ]
    for body, loc in cases:
        error = _error(await client.post("/v1/admin/templates", json=body, headers=boss.headers), 422)
        assert loc in _locs(error), (loc, error)
        assert await session.scalar(select(ServiceTemplate).where(ServiceTemplate.code == body["code"])) is None
    # A rule across fields names the field in its message.
    wrong_tier = broken(lambda b: b.update(default_tier="huge"))
    error = _error(await client.post("/v1/admin/templates", json=wrong_tier, headers=boss.headers), 422)
    assert "default_tier" in error["details"][0]["msg"]
