"""One error contract everywhere (issue 8 §7).

Every error, on every route, is `{"error": {"code", "message", "details"}}` with the right status: a body that is
not JSON by its Content-Type is 415, a body the JSON parser gives up on (malformed, not UTF-8, nested too deeply)
is 422 `invalid_json`, the router's answers for an instance's host (unknown, stopped, not answering) and the
/readyz 503 are in the same shape and documented. Numbers have schema bounds, so an astronomical price is a 422,
never a 500. A database error is logged without the values that were sent with it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi import APIRouter, Depends
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from jushostit.app import create_app
from jushostit.auth.dependencies import public
from jushostit.kit.db import Database, SessionDep
from jushostit.kit.errors import error_payload
from jushostit.kit.schemas import MINOR_UNITS_MAX
from jushostit.models import Plan, User
from jushostit.runtime.local.driver import LOOPBACK, LocalDriver, RunRecord
from jushostit.runtime.local.router import LocalRouter, Route, RouteCache, Upstreams
from tests.conftest import asgi_client, build_app
from tests.test_api_contract import assert_error, count, signup_body
from tests.test_input_bounds import nodes_of_type, plan_body

# --- 415: a body that is not JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "application/xml"},
        {"Content-Type": "multipart/form-data; boundary=x"},
        {},  # a body with no Content-Type at all
    ],
    ids=["text", "form", "xml", "multipart", "none"],
)
async def test_a_non_json_content_type_is_415_in_the_error_shape(client, session, headers) -> None:
    users = await count(session, User)
    response = await client.post("/v1/auth/signup", content=json.dumps(signup_body()).encode(), headers=headers)
    error = assert_error(response, 415, "unsupported_media_type")
    assert error["details"] == {"supported": ["application/json"]}
    assert await count(session, User) == users


async def test_a_non_json_body_is_415_on_an_authenticated_route_too(client, signup) -> None:
    me = await signup()
    response = await client.patch(
        f"/v1/accounts/{me.account_id}", content=b'{"name": "x"}', headers={**me.headers, "Content-Type": "text/plain"}
    )
    assert_error(response, 415, "unsupported_media_type")
    # Without credentials the route answers 401 first, as for any other body.
    assert_error(await client.patch(f"/v1/accounts/{me.account_id}", content=b"x"), 401, "unauthorized")


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "application/x+json"]
)
async def test_json_media_types_are_read_as_json(client, content_type) -> None:
    body = json.dumps({"email": "nobody@example.com", "password": "not the password"}).encode()
    response = await client.post("/v1/auth/login", content=body, headers={"Content-Type": content_type})
    assert_error(response, 401, "invalid_credentials")  # read and checked: not refused for its media type


async def test_an_empty_body_without_a_content_type_is_a_missing_body_not_415(client) -> None:
    error = assert_error(await client.post("/v1/auth/signup"), 422, "validation_error")
    assert [d["loc"] for d in error["details"]] == [["body"]]


def test_every_operation_with_a_body_documents_its_415(app) -> None:
    document = app.openapi()
    undocumented = [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
        and operation["responses"].get("415", {}).get("content", {}).get("application/json", {}).get("schema")
        != {"$ref": "#/components/schemas/ErrorResponse"}
    ]
    assert undocumented == []


# --- 422 invalid_json: whatever the parser gives up on ---------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000],
    ids=["arrays", "objects"],
)
async def test_deeply_nested_json_is_422_invalid_json_like_any_malformed_body(client, session, raw) -> None:
    users = await count(session, User)
    response = await client.post("/v1/auth/signup", content=raw, headers={"Content-Type": "application/json"})
    error = assert_error(response, 422, "invalid_json")
    assert "nested too deeply" in error["message"]
    assert await count(session, User) == users


# --- the router's answers for an instance's host ---------------------------------------------------------------


ACCOUNT = uuid.uuid4()


async def api(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("a request for an instance's host reached the API")


@pytest.fixture
async def tenant(tmp_path: Path) -> AsyncIterator[tuple[dict[str, Route], LocalDriver, httpx.AsyncClient]]:
    """The local router over a table of routes (no instance process runs)."""
    routes: dict[str, Route] = {}
    driver = LocalDriver(tmp_path / "instances")

    async def lookup(slug: str) -> Route | None:
        return routes.get(slug)

    upstreams = Upstreams()
    router = LocalRouter(api, driver=driver, routes=RouteCache(lookup), upstreams=upstreams)
    transport = httpx.ASGITransport(app=router, client=("203.0.113.9", 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield routes, driver, client
    finally:
        await upstreams.aclose()


def assert_tenant_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The contract's shape (the request id is the app's outer middleware's, not the router's)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body == error_payload(code, body["error"]["message"]) and body["error"]["message"], body
    return body["error"]


async def test_an_unknown_instance_host_is_404_in_the_error_shape(tenant) -> None:
    _, _, client = tenant
    response = await client.get("/", headers={"Host": "nothing-here-abc123.localhost:8000"})
    assert "No such service" in assert_tenant_error(response, 404, "not_found")["message"]


@pytest.mark.parametrize(
    ("status", "code", "word"),
    [
        ("stopped", "service_suspended", "suspended"),
        ("expired", "service_suspended", "suspended"),
        ("provisioning", "service_starting", "starting"),
        ("failed", "service_unavailable", "unavailable"),
    ],
)
async def test_an_unavailable_instance_host_is_503_in_the_error_shape(tenant, status, code, word) -> None:
    routes, _, client = tenant
    routes["site-abc123"] = Route(ACCOUNT, uuid.uuid4(), status)
    response = await client.get("/", headers={"Host": "site-abc123.localhost:8000"})
    assert word in assert_tenant_error(response, 503, code)["message"]
    assert response.headers["retry-after"] == "60"


async def test_an_instance_that_does_not_answer_is_502_in_the_error_shape(tenant) -> None:
    routes, driver, client = tenant
    instance_id = uuid.uuid4()
    routes["site-abc123"] = Route(ACCOUNT, instance_id, "running")
    with socket.socket() as s:  # a port nothing listens on once it is closed
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    directory = driver.instance_dir(ACCOUNT, instance_id)
    directory.mkdir(parents=True)
    record = RunRecord(pid=os.getpid(), started=psutil.Process().create_time(), port=port, throttled=False)
    (directory / "run.json").write_text(json.dumps(record.__dict__))
    response = await client.get("/", headers={"Host": "site-abc123.localhost:8000"})
    assert_tenant_error(response, 502, "bad_gateway")


async def test_an_instance_host_error_carries_the_request_id_through_the_app(client) -> None:
    """In the full app (the instances table has no such slug): the router's 404 has the API's request id."""
    response = await client.get("/", headers={"Host": "nothing-here-abc123.localhost:8000", "X-Request-Id": "t-1"})
    assert_error(response, 404, "not_found")
    assert response.headers["x-request-id"] == "t-1"


# --- /readyz ---------------------------------------------------------------------------------------------------


async def test_readyz_503_is_in_the_error_shape(settings, container) -> None:
    app = create_app(settings, container=container)
    app.state.database = Database.from_url("postgresql://postgres@127.0.0.1:1/nothing", pool_size=1)
    try:
        async with asgi_client(app) as c:
            response = await c.get("/readyz")
    finally:
        await app.state.database.engine.dispose()
    error = assert_error(response, 503, "not_ready")
    assert error["details"]["status"] == "unavailable" and error["details"]["database"]


def test_readyz_documents_its_503_and_its_200(app) -> None:
    responses = app.openapi()["paths"]["/readyz"]["get"]["responses"]
    assert responses["503"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "not_ready" in responses["503"]["description"]
    ready = responses["200"]["content"]["application/json"]["schema"]
    assert ready == {"$ref": "#/components/schemas/Ready"}


# --- numbers have bounds ---------------------------------------------------------------------------------------


BIGINT = (-(2**63), 2**63 - 1)


def test_every_request_number_has_a_documented_range_that_fits_a_bigint_column(app) -> None:
    numbers = nodes_of_type(app, "integer") + [
        (where, schema) for where, schema in _all_request_nodes(app) if schema.get("type") == "number"
    ]
    wrong = [
        f"{where}: {schema.get('minimum')}..{schema.get('maximum')}"
        for where, schema in numbers
        if "minimum" not in schema
        or "maximum" not in schema
        or not BIGINT[0] <= schema["minimum"] <= schema["maximum"] <= BIGINT[1]
    ]
    assert wrong == [], "request numbers without a range that fits a BIGINT:\n" + "\n".join(sorted(set(wrong)))


def _all_request_nodes(app: Any) -> list[tuple[str, dict[str, Any]]]:
    from tests.test_input_bounds import request_schemas

    return list(request_schemas(app.openapi()))


@pytest.mark.parametrize("price", [b"1e30", b"1e3", b"1.5", b"1000000000000000000000000000000", b"-1"])
async def test_a_plan_price_of_1e30_is_422_never_500(client, session, admin, price) -> None:
    boss = await admin()
    plans = await count(session, Plan)
    body = json.dumps(plan_body(price_minor=0)).replace('"price_minor": 0', '"price_minor": ' + price.decode())
    headers = {**boss.headers, "Content-Type": "application/json"}
    created = await client.post("/v1/admin/plans", content=body.encode(), headers=headers)
    assert ["body", "price_minor"] in [d["loc"] for d in assert_error(created, 422, "validation_error")["details"]]
    updated = await client.patch("/v1/admin/plans/starter", content=b'{"price_minor": ' + price + b"}", headers=headers)
    assert_error(updated, 422, "validation_error")
    assert await count(session, Plan) == plans
    starter = await session.scalar(text("SELECT price_minor FROM plans WHERE code = 'starter'"))
    assert 0 <= starter <= MINOR_UNITS_MAX


# --- database errors in the logs -------------------------------------------------------------------------------


CANARY = "canary-" + uuid.uuid4().hex[:12]


async def test_a_failed_statement_never_shows_the_values_bound_to_it(container) -> None:
    """The engine hides bound parameters in its errors (hide_parameters), so no traceback can show them."""
    with pytest.raises(DBAPIError) as raised:
        async with container.database.engine.connect() as connection:
            await connection.execute(text("SELECT CAST(:value AS text), 1 / 0"), {"value": CANARY})
    assert CANARY not in str(raised.value)
    assert "hidden" in str(raised.value)


db_error_router = APIRouter(prefix="/v1/contract-probe", dependencies=[Depends(public())])


@db_error_router.post("/db-error/{kind}")
async def db_error(kind: str, session: SessionDep) -> dict[str, str]:
    if kind == "unique":  # the server's DETAIL quotes the key: Key (value)=(canary-...) already exists
        await session.execute(text("CREATE TEMPORARY TABLE probe_unique (value text UNIQUE) ON COMMIT DROP"))
        await session.execute(text("INSERT INTO probe_unique VALUES (:value), (:value)"), {"value": CANARY})
    elif kind == "syntax":  # a data exception quotes the input: invalid input syntax for type uuid: "canary-..."
        await session.execute(text("SELECT CAST(:value AS uuid)"), {"value": CANARY})
    else:  # the value only in the bound parameters
        await session.execute(text("SELECT CAST(:value AS text), 1 / 0"), {"value": CANARY})
    return {}


@pytest.fixture
async def db_error_client(settings, container, connection) -> AsyncIterator[httpx.AsyncClient]:
    application = build_app(settings, container, connection)
    application.include_router(db_error_router)
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False, client=("203.0.113.9", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def rendered_log_lines(caplog: pytest.LogCaptureFixture) -> str:
    """Each captured record as the app's JSON handler writes it, and as captured before rendering."""
    root = logging.getLogger()
    formatters = [h.formatter for h in root.handlers if h.formatter is not None]
    assert formatters, "configure_logging() installs the JSON handler"
    lines = []
    for record in caplog.records:
        lines.append(repr(record.msg))
        lines.extend(formatter.format(record) for formatter in formatters)
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("kind", "sqlstate"), [("unique", "23505"), ("syntax", "22P02"), ("parameters", "22012")]
)
async def test_a_database_error_is_logged_without_the_values_sent(db_error_client, caplog, kind, sqlstate) -> None:
    caplog.set_level(logging.INFO)
    response = await db_error_client.post(f"/v1/contract-probe/db-error/{kind}", headers={"X-Request-Id": "db-1"})
    assert_error(response, 500, "internal_error")
    logged = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "http.unhandled_error"]
    assert logged and "Traceback" in logged[-1]["exception"], "the traceback is still logged"
    assert f"SQLSTATE {sqlstate}" in logged[-1]["exception"], "with what kind of error it was"
    assert CANARY not in rendered_log_lines(caplog)
    assert CANARY not in response.text
