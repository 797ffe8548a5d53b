"""Bad input answers 4xx, never 500 (issue 7 §8).

Every string a client sends has a documented maximum that fits where it is stored, every integer a range that
fits its column, every list and map a maximum size: read from the live OpenAPI, so a new field without one fails
here. Then the promise is checked on the real app and database: a value over its maximum is a 422 in the
contract's shape and changes nothing, a value at its maximum is stored, and sign-in with an address longer than
the throttle key column is counted like any other (it used to fail as a 500).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from jushostit.catalog import loader
from jushostit.kit.schemas import EMAIL_MAX_LENGTH, INT32_MAX, MINOR_UNITS_MAX
from jushostit.models import (
    Account,
    ApiKey,
    AuditEntry,
    AuthThrottle,
    CreditEntry,
    CreditGrant,
    Instance,
    Invite,
    Invoice,
    InvoiceLine,
    Payment,
    Plan,
    ServiceTemplate,
    Subscription,
    User,
)
from tests.conftest import TEST_PASSWORD, Signup

# Formats whose own grammar bounds the length, and which the app parses (a UUID is 36 characters, an RFC 3339
# date-time about 35, a date 10): anything longer is refused by the parser as any other malformed value.
SELF_BOUNDED_FORMATS = {"uuid", "date-time", "date"}

# --- the documented maxima ----------------------------------------------------------------------------------


def request_schemas(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, schema) for every schema node a client's request can reach: parameters and JSON bodies, through
    references, combinators, properties, list items and map keys and values."""
    components = document["components"]["schemas"]

    def walk(where: str, schema: dict[str, Any], seen: frozenset[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name in seen:
                return
            seen, schema = seen | {name}, components[name]
        yield where, schema
        for combinator in ("anyOf", "oneOf", "allOf"):
            for option in schema.get(combinator, []):
                yield from walk(where, option, seen)
        for name, prop in schema.get("properties", {}).items():
            yield from walk(f"{where}.{name}", prop, seen)
        if isinstance(schema.get("items"), dict):
            yield from walk(f"{where}[]", schema["items"], seen)
        if isinstance(schema.get("additionalProperties"), dict):
            yield from walk(f"{where}{{value}}", schema["additionalProperties"], seen)
        if "propertyNames" in schema:
            yield from walk(f"{where}{{key}}", {"type": "string", **schema["propertyNames"]}, seen)

    for path, item in document["paths"].items():
        for method, operation in item.items():
            label = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                yield from walk(f"{label} {parameter['in']} {parameter['name']}", parameter["schema"], frozenset())
            for media_type, content in operation.get("requestBody", {}).get("content", {}).items():
                yield from walk(f"{label} body ({media_type})", content["schema"], frozenset())


def nodes_of_type(app: Any, kind: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(where, schema) for where, schema in request_schemas(app.openapi()) if schema.get("type") == kind]
    assert found, f"the walk found no {kind} in any request: it is broken"
    return found


def test_every_request_string_has_a_documented_maximum(app) -> None:
    strings = nodes_of_type(app, "string")
    unbounded = [
        where
        for where, schema in strings
        if "maxLength" not in schema
        and "enum" not in schema
        and "const" not in schema
        and schema.get("format") not in SELF_BOUNDED_FORMATS
    ]
    assert not unbounded, "request strings without maxLength:\n" + "\n".join(sorted(set(unbounded)))
    # The walk reaches nested bodies, map keys, query parameters and headers.
    reached = {where for where, _ in strings}
    assert {
        "POST /v1/auth/login body (application/json).email",
        "POST /v1/admin/templates body (application/json).env[].name",
        "POST /v1/admin/templates body (application/json).tiers{key}",
        "GET /v1/admin/audit query action",
        "POST /v1/accounts/{account_id}/instances header Idempotency-Key",
        "GET /v1/admin/metering/runs query collector",
    } <= reached


def test_every_request_integer_has_a_documented_range(app) -> None:
    unbounded = [
        where for where, schema in nodes_of_type(app, "integer") if "maximum" not in schema or "minimum" not in schema
    ]
    assert not unbounded, "request integers without minimum and maximum:\n" + "\n".join(sorted(set(unbounded)))


def test_every_request_list_and_map_has_a_documented_maximum_size(app) -> None:
    lists = [where for where, schema in nodes_of_type(app, "array") if "maxItems" not in schema]
    maps = [
        where
        for where, schema in nodes_of_type(app, "object")
        if isinstance(schema.get("additionalProperties"), dict) and "maxProperties" not in schema
    ]
    assert not lists + maps, "unbounded request lists and maps:\n" + "\n".join(sorted(set(lists + maps)))


# --- refused above the maximum, changing nothing --------------------------------------------------------------


def assert_validation_error(response: httpx.Response, loc: list[Any]) -> None:
    assert response.status_code == 422, f"{response.request.method} {response.request.url}: {response.text}"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == "validation_error", body
    assert loc in [detail["loc"] for detail in body["error"]["details"]], body


async def row_counts(session) -> dict[str, int]:
    """Rows per table a refused request could have touched (every change also writes an audit entry)."""
    tables = (User, Account, ApiKey, Invite, Plan, ServiceTemplate, Subscription, Instance, AuditEntry, AuthThrottle,
              CreditGrant, CreditEntry, Invoice, InvoiceLine, Payment)
    return {table.__name__: await session.scalar(select(func.count()).select_from(table)) for table in tables}


def template_body(**changes: Any) -> dict[str, Any]:
    spec = next(s for s in loader.load_templates() if s.code == "n8n").model_dump(mode="json")
    return {**spec, "code": f"tpl-{uuid.uuid4().hex[:8]}", "process": None, **changes}


def plan_body(**changes: Any) -> dict[str, Any]:
    return {
        "code": f"bounds-{uuid.uuid4().hex[:8]}",
        "name": "Bounds plan",
        "price_minor": 1500,
        "currency": "EUR",
        "billing_modes": ["card"],
        "quotas": {"cpu_millicores": 1000, "memory_mib": 1024, "storage_gib": 5, "max_instances": 2},
        **changes,
    }


def address(length: int) -> str:
    """A syntactically valid address of exactly `length` characters (labels within DNS's 63)."""
    local = "a" * 64
    domain_length = length - len(local) - 1
    labels = ["b" * 63] * ((domain_length - 4) // 64)
    labels.append("c" * (domain_length - 4 - 64 * len(labels)))
    result = f"{local}@{'.'.join(labels)}.com"
    assert len(result) == length
    return result


# (method, path, body, headers, loc) for one caller who is a platform admin and owns an account.
OVER_LENGTH: dict[str, Callable[[Signup], tuple[str, str, dict[str, Any] | None, dict[str, str], list[Any]]]] = {
    "signup email": lambda me: (
        "POST", "/v1/auth/signup",
        {"email": address(EMAIL_MAX_LENGTH + 1), "password": TEST_PASSWORD, "account_name": "A"}, {}, ["body", "email"],
    ),
    "signup account name": lambda me: (
        "POST", "/v1/auth/signup",
        {"email": "long-name@example.com", "password": TEST_PASSWORD, "account_name": "n" * 201}, {},
        ["body", "account_name"],
    ),
    "refresh token": lambda me: ("POST", "/v1/auth/refresh", {"refresh_token": "t" * 513}, {}, ["body", "refresh_token"]),
    "API key name (its column is 100)": lambda me: (
        "POST", "/v1/me/api-keys", {"name": "k" * 101, "scopes": ["account:read"]}, me.headers, ["body", "name"],
    ),
    "account name": lambda me: ("PATCH", f"/v1/accounts/{me.account_id}", {"name": "n" * 201}, me.headers, ["body", "name"]),
    "billing email": lambda me: (
        "PATCH", f"/v1/accounts/{me.account_id}", {"billing_email": address(EMAIL_MAX_LENGTH + 1)}, me.headers,
        ["body", "billing_email"],
    ),
    "invite email": lambda me: (
        "POST", f"/v1/accounts/{me.account_id}/invites", {"email": address(EMAIL_MAX_LENGTH + 1)}, me.headers,
        ["body", "email"],
    ),
    "invite token": lambda me: ("POST", "/v1/invites/accept", {"token": "t" * 513}, me.headers, ["body", "token"]),
    "instance name": lambda me: (
        "POST", f"/v1/accounts/{me.account_id}/instances", {"template": "static-site", "name": "i" * 41}, me.headers,
        ["body", "name"],
    ),
    "idempotency key": lambda me: (
        "POST", f"/v1/accounts/{me.account_id}/checkout", {"plan": "free"},
        {**me.headers, "Idempotency-Key": "k" * 201}, ["header", "Idempotency-Key"],
    ),
    "suspension note": lambda me: (
        "POST", f"/v1/admin/accounts/{me.account_id}/suspend", {"reason": "admin", "note": "n" * 1001}, me.headers,
        ["body", "note"],
    ),
    "plan Stripe price id": lambda me: (
        "POST", "/v1/admin/plans", plan_body(stripe_price_id="p" * 101), me.headers, ["body", "stripe_price_id"],
    ),
    "plan name (update)": lambda me: ("PATCH", "/v1/admin/plans/starter", {"name": "n" * 201}, me.headers, ["body", "name"]),
    "template env name (a stored secret's name, 100)": lambda me: (
        "POST", "/v1/admin/templates",
        template_body(env=[{"name": "E" * 101, "generate": {"length": 16}}]), me.headers, ["body", "env", 0, "name"],
    ),
    "template description": lambda me: (
        "POST", "/v1/admin/templates", template_body(description="d" * 1001), me.headers, ["body", "description"],
    ),
    "audit action filter": lambda me: ("GET", "/v1/admin/audit?action=" + "a" * 65, None, me.headers, ["query", "action"]),
    "credit grant reason": lambda me: (
        "POST", f"/v1/admin/accounts/{me.account_id}/credits/grants", {"amount": 1, "reason": "r" * 201}, me.headers,
        ["body", "reason"],
    ),
    "credit debit reference": lambda me: (
        "POST", f"/v1/admin/accounts/{me.account_id}/credits/debits",
        {"amount": 1, "reason": "usage", "reference": "r" * 201}, me.headers, ["body", "reference"],
    ),
    "invoice line description": lambda me: (
        "POST", f"/v1/admin/accounts/{me.account_id}/invoices",
        {"currency": "EUR", "lines": [{"description": "d" * 201, "unit_amount_minor": 1}]}, me.headers,
        ["body", "lines", 0, "description"],
    ),
    "invoice memo": lambda me: (
        "POST", f"/v1/admin/accounts/{me.account_id}/invoices",
        {"currency": "EUR", "lines": [{"description": "Hosting", "unit_amount_minor": 1}], "memo": "m" * 1001},
        me.headers, ["body", "memo"],
    ),
    "invoice payment reference": lambda me: (
        "POST", f"/v1/admin/invoices/{uuid.uuid4()}/mark-paid", {"reference": "r" * 201}, me.headers,
        ["body", "reference"],
    ),
    "metering runs collector filter": lambda me: (
        "GET", "/v1/admin/metering/runs?collector=" + "c" * 33, None, me.headers, ["query", "collector"],
    ),
}


@pytest.mark.parametrize("case", OVER_LENGTH)
async def test_a_value_over_its_maximum_is_422_and_changes_nothing(client, session, admin, case) -> None:
    me = await admin()
    method, path, body, headers, loc = OVER_LENGTH[case](me)
    before = await row_counts(session)
    response = await client.request(method, path, json=body, headers=headers)
    assert_validation_error(response, loc)
    assert await row_counts(session) == before


async def test_sign_in_with_a_300_character_email_is_422_not_a_server_error(client, session) -> None:
    before = await row_counts(session)
    response = await client.post("/v1/auth/login", json={"email": "x" * 288 + "@example.com", "password": "wrong"})
    assert_validation_error(response, ["body", "email"])
    assert await row_counts(session) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price_minor", 10**30),
        ("price_minor", MINOR_UNITS_MAX + 1),
        ("default_budget_minor", 2**63),
        ("quotas", {"cpu_millicores": 10**30, "memory_mib": 1, "storage_gib": 1, "max_instances": 1}),
        ("quotas", {"cpu_millicores": 1, "memory_mib": 1, "storage_gib": 1, "max_instances": INT32_MAX + 1}),
    ],
)
async def test_an_astronomical_price_or_quota_is_422_and_no_plan_changes(client, session, admin, field, value) -> None:
    boss = await admin()
    before = await row_counts(session)
    plans_before = (await client.get("/v1/admin/plans", params={"limit": 200}, headers=boss.headers)).json()["items"]

    created = await client.post("/v1/admin/plans", json=plan_body(**{field: value}), headers=boss.headers)
    assert created.status_code == 422, created.text
    assert created.json()["error"]["code"] == "validation_error"
    assert [field] == created.json()["error"]["details"][0]["loc"][1:2]
    updated = await client.patch("/v1/admin/plans/starter", json={field: value}, headers=boss.headers)
    assert updated.status_code == 422, updated.text

    assert await row_counts(session) == before
    plans_after = (await client.get("/v1/admin/plans", params={"limit": 200}, headers=boss.headers)).json()["items"]
    assert plans_after == plans_before


@pytest.mark.parametrize("value", [MINOR_UNITS_MAX + 1, 2**63, -1])
async def test_an_astronomical_or_negative_budget_is_422_and_the_budget_stays(client, session, signup, value) -> None:
    owner = await signup(account_name="Budget bounds")
    path = f"/v1/accounts/{owner.account_id}/budget"
    kept = await client.put(path, json={"monthly_limit_minor": 5000, "currency": "EUR"}, headers=owner.headers)
    assert kept.status_code == 200, kept.text
    before = await row_counts(session)

    refused = await client.put(path, json={"monthly_limit_minor": value, "currency": "EUR"}, headers=owner.headers)
    assert_validation_error(refused, ["body", "monthly_limit_minor"])
    assert await row_counts(session) == before
    session.expire_all()
    account = await session.get(Account, uuid.UUID(owner.account_id))
    assert (account.budget_minor, account.budget_currency) == (5000, "EUR")


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/v1/admin/usage", {"limit": 201}),
        ("/v1/admin/usage", {"month": "2026-13"}),
        ("/v1/admin/usage", {"month": "0"}),
        ("/v1/admin/usage", {"month": "0000-01"}),
        ("/v1/admin/metering/runs", {"limit": 201}),
        ("/v1/admin/metering/unmapped", {"days": 36}),
        ("/v1/admin/metering/unmapped", {"limit": 501}),
        ("/v1/admin/metering/stripe-reports", {"limit": 201}),
        ("/v1/admin/metering/stripe-reports", {"limit": 0}),
    ],
)
async def test_metering_listings_refuse_a_limit_or_month_out_of_range(client, admin, path, query) -> None:
    boss = await admin()
    response = await client.get(path, params=query, headers=boss.headers)
    assert_validation_error(response, ["query", *query])


# --- accepted at the maximum, stored ----------------------------------------------------------------------------


async def test_values_at_their_maximum_are_stored(client, session, admin) -> None:
    boss = await admin()
    plan = plan_body(
        name="n" * 200,
        price_minor=MINOR_UNITS_MAX,
        default_budget_minor=MINOR_UNITS_MAX,
        stripe_price_id="p" * 100,
        quotas={"cpu_millicores": INT32_MAX, "memory_mib": INT32_MAX, "storage_gib": INT32_MAX,
                "max_instances": INT32_MAX},
    )
    created = await client.post("/v1/admin/plans", json=plan, headers=boss.headers)
    assert created.status_code == 201, created.text
    stored = await session.scalar(select(Plan).where(Plan.code == plan["code"]))
    assert stored is not None and stored.price_minor == MINOR_UNITS_MAX and stored.quotas["max_instances"] == INT32_MAX

    key = await client.post("/v1/me/api-keys", json={"name": "k" * 100, "scopes": ["account:read"]}, headers=boss.headers)
    assert key.status_code == 201, key.text
    assert (await session.get(ApiKey, uuid.UUID(key.json()["id"]))).name == "k" * 100

    invite = await client.post(
        f"/v1/accounts/{boss.account_id}/invites", json={"email": address(EMAIL_MAX_LENGTH)}, headers=boss.headers
    )
    assert invite.status_code == 201, invite.text
    renamed = await client.patch(f"/v1/accounts/{boss.account_id}", json={"name": "n" * 200}, headers=boss.headers)
    assert renamed.status_code == 200 and renamed.json()["name"] == "n" * 200

    budget = await client.put(f"/v1/accounts/{boss.account_id}/budget",
                              json={"monthly_limit_minor": MINOR_UNITS_MAX, "currency": "EUR"}, headers=boss.headers)
    assert budget.status_code == 200, budget.text
    session.expire_all()
    assert (await session.get(Account, uuid.UUID(boss.account_id))).budget_minor == MINOR_UNITS_MAX


async def test_an_address_longer_than_the_throttle_key_column_signs_in_and_its_failures_count(client, session) -> None:
    email = address(EMAIL_MAX_LENGTH)
    assert len(f"email:{email}") > AuthThrottle.__table__.c.key.type.length
    signed_up = await client.post(
        "/v1/auth/signup", json={"email": email, "password": TEST_PASSWORD, "account_name": "Long Address"}
    )
    assert signed_up.status_code == 202, signed_up.text

    refused = await client.post("/v1/auth/login", json={"email": email, "password": "not the password"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_credentials", refused.text
    counted = (await session.scalars(select(AuthThrottle).where(AuthThrottle.key.startswith("email-sha256:")))).all()
    assert [row.failures for row in counted] == [1]

    signed_in = await client.post("/v1/auth/login", json={"email": email, "password": TEST_PASSWORD})
    assert signed_in.status_code == 200, signed_in.text
    # Success forgives the address's failures, found under the same hashed key.
    remaining = await session.scalars(
        select(AuthThrottle).where(AuthThrottle.key == counted[0].key).execution_options(populate_existing=True)
    )
    assert remaining.all() == []
