"""The API contract of DESIGN §10 for bad input (issue 3 §6, §9 and "Bad input").

Every error is `{"error": {"code", "message", "details"}}` — 404, 405, 422, 413 and 500 included; request
models are strict and refuse unknown fields a client could mass-assign; oversized bodies are refused whether
or not they declare their length; every response carries a request id; a refused request changes nothing and
never echoes a submitted password.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends
from sqlalchemy import func, select

from jushostit.auth.dependencies import public
from jushostit.kit.schemas import RequestModel
from jushostit.models import Account, ApiKey, Membership, User
from tests.conftest import TEST_PASSWORD, build_app

CANARY_PASSWORD = "canary-pw-3f9c2a7e-do-not-echo"


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    assert response.headers.get("x-request-id"), "every response carries a request id"
    return body["error"]


async def count(session, model: Any) -> int:
    return await session.scalar(select(func.count()).select_from(model))


def signup_body(**overrides: Any) -> dict[str, Any]:
    return {
        "email": f"contract-{uuid.uuid4().hex[:8]}@example.com",
        "password": TEST_PASSWORD,
        "account_name": "Contract Co",
        **overrides,
    }


# --- 404 and 405 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/v1/nope", "/v1/accounts", "/v1/me/extra/segments"])
async def test_unknown_path_is_404_in_the_error_shape(client, path) -> None:
    error = assert_error(await client.get(path), 404, "not_found")
    assert error["details"] is None


async def test_malformed_id_in_the_path_is_404_not_422(client, signup) -> None:
    me = await signup()
    assert_error(await client.get("/v1/accounts/not-a-uuid", headers=me.headers), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("PUT", "/v1/me", "GET"), ("DELETE", "/v1/auth/signup", "POST"), ("POST", "/healthz", "GET")],
)
async def test_wrong_method_is_405_in_the_error_shape(client, method, path, allowed) -> None:
    response = await client.request(method, path)
    assert_error(response, 405, "method_not_allowed")
    assert allowed in response.headers["allow"]


async def test_405_allows_every_method_of_the_path_not_only_the_first_route_found(client) -> None:
    response = await client.request("OPTIONS", f"/v1/accounts/{uuid.uuid4()}")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, PATCH"


# --- 422: strict types, malformed JSON -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("account_name", False),  # `false` for a string
        ("account_name", 123),
        ("email", ["a@example.com"]),
        ("password", 1234567890123),  # a number for the password
        ("password", None),
    ],
)
async def test_wrong_types_in_signup_are_422_and_create_nothing(client, session, field, value) -> None:
    users = await count(session, User)
    body = signup_body(**{field: value})
    error = assert_error(await client.post("/v1/auth/signup", json=body), 422, "validation_error")
    assert ["body", field] in [d["loc"] for d in error["details"]]
    assert await count(session, User) == users


async def test_wrong_types_elsewhere_are_422(client, signup) -> None:
    me = await signup()
    key = await client.post("/v1/me/api-keys", json={"name": "k", "scopes": "account:read"}, headers=me.headers)
    assert_error(key, 422, "validation_error")
    role = await client.patch(
        f"/v1/accounts/{me.account_id}/members/{me.user_id}", json={"role": 2}, headers=me.headers
    )
    assert_error(role, 422, "validation_error")
    # Query parameters are checked too: `false` is not a page size.
    page = await client.get(f"/v1/accounts/{me.account_id}/members", params={"limit": "false"}, headers=me.headers)
    assert_error(page, 422, "validation_error")


@pytest.mark.parametrize("value", [1700000000, 0.5, "0.5", "1700000000", "2030-01-31T12:00:00", "2030-01-31"])
async def test_a_date_time_is_rfc_3339_text_with_an_offset_never_a_timestamp(client, session, admin, value) -> None:
    """Lax parsing would read a number, even "0.5", as a Unix timestamp; `format: date-time` says otherwise."""
    boss = await admin()
    keys = await count(session, ApiKey)
    body = {"name": "k", "scopes": ["account:read"], "expires_at": value}
    error = assert_error(await client.post("/v1/me/api-keys", json=body, headers=boss.headers), 422, "validation_error")
    assert [d["loc"] for d in error["details"]] == [["body", "expires_at"]]
    assert await count(session, ApiKey) == keys
    audit = await client.get("/v1/admin/audit", params={"until": str(value)}, headers=boss.headers)
    assert [d["loc"] for d in assert_error(audit, 422, "validation_error")["details"]] == [["query", "until"]]

    body["expires_at"] = "2030-01-31T12:00:00Z"
    assert (await client.post("/v1/me/api-keys", json=body, headers=boss.headers)).status_code == 201
    audit = await client.get("/v1/admin/audit", params={"until": "2030-01-31T12:00:00+02:00"}, headers=boss.headers)
    assert audit.status_code == 200, audit.text


strict_router = APIRouter(prefix="/v1/contract-probe", dependencies=[Depends(public())])


class Toggles(RequestModel):
    enabled: bool
    count: int
    name: str


@strict_router.post("/toggles")
async def toggles(body: Toggles) -> dict[str, Any]:
    return body.model_dump()


@pytest.fixture
async def probe_client(settings, container, connection) -> AsyncIterator[httpx.AsyncClient]:
    """The real app (error handlers, middleware, test transaction) with extra probe routes mounted."""
    application = build_app(settings, container, connection)
    application.include_router(strict_router)
    application.include_router(crash_router)
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False, client=("203.0.113.9", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def test_request_models_refuse_coercion(probe_client) -> None:
    ok = await probe_client.post("/v1/contract-probe/toggles", json={"enabled": True, "count": 2, "name": "n"})
    assert ok.status_code == 200 and ok.json() == {"enabled": True, "count": 2, "name": "n"}
    for wrong in (
        {"enabled": "1", "count": 2, "name": "n"},  # "1" for a bool
        {"enabled": 1, "count": 2, "name": "n"},
        {"enabled": "true", "count": 2, "name": "n"},
        {"enabled": True, "count": False, "name": "n"},  # `false` for an integer
        {"enabled": True, "count": "2", "name": "n"},
        {"enabled": True, "count": 2.0, "name": "n"},
        {"enabled": True, "count": 2, "name": False},  # `false` for a string
        {"enabled": True, "count": 2, "name": 7},
    ):
        error = assert_error(await probe_client.post("/v1/contract-probe/toggles", json=wrong), 422, "validation_error")
        assert len(error["details"]) == 1, error


@pytest.mark.parametrize(
    "raw",
    [
        b'{"email": "x@example.com", "password": ',
        b"{'email': 'single-quoted@example.com'}",
        b'{"email": "x@example.com"} trailing',
        b"\xff\xfe\x00not utf-8 at all",
        b"[1, 2,",
    ],
    ids=["truncated", "single-quotes", "trailing-garbage", "not-utf8", "unclosed-array"],
)
async def test_malformed_json_is_422_invalid_json_and_creates_nothing(client, session, raw) -> None:
    users = await count(session, User)
    response = await client.post("/v1/auth/signup", content=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 422, "invalid_json")
    assert await count(session, User) == users


# --- 413: body limit -------------------------------------------------------------------------------------------


async def test_oversized_body_with_content_length_is_413(client, session, settings) -> None:
    users = await count(session, User)
    body = json.dumps(signup_body(account_name="x" * settings.max_body_bytes)).encode()
    assert len(body) > settings.max_body_bytes
    response = await client.post("/v1/auth/signup", content=body, headers={"Content-Type": "application/json"})
    assert response.request.headers["content-length"] == str(len(body))
    error = assert_error(response, 413, "payload_too_large")
    assert str(settings.max_body_bytes) in error["message"]
    assert await count(session, User) == users


async def test_oversized_streamed_body_without_content_length_is_413(client, session, settings) -> None:
    users = await count(session, User)
    chunk = b"x" * 64 * 1024
    chunks = settings.max_body_bytes // len(chunk) + 2

    async def stream() -> AsyncIterator[bytes]:
        yield b'{"email": "streamed@example.com", "password": "a sturdy test passphrase", "account_name": "'
        for _ in range(chunks):
            yield chunk
        yield b'"}'

    response = await client.post("/v1/auth/signup", content=stream(), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error(response, 413, "payload_too_large")
    assert await count(session, User) == users


async def test_a_lying_content_length_is_refused(client) -> None:
    response = await client.post(
        "/v1/auth/signup", content=b"{}", headers={"Content-Type": "application/json", "Content-Length": "abc"}
    )
    assert_error(response, 413, "payload_too_large")


async def test_a_body_within_the_limit_is_not_refused_for_its_size(client, settings) -> None:
    body = json.dumps(signup_body(account_name="x" * (settings.max_body_bytes // 2))).encode()
    response = await client.post("/v1/auth/signup", content=body, headers={"Content-Type": "application/json"})
    # Refused for its content (the name is too long), not for its size.
    assert_error(response, 422, "validation_error")


# --- 500 -------------------------------------------------------------------------------------------------------


crash_router = APIRouter(prefix="/v1/contract-probe", dependencies=[Depends(public())])


@crash_router.get("/crash")
async def crash() -> dict[str, str]:
    raise RuntimeError("internal detail that must not reach the client: db password hunter2")


async def test_unhandled_error_is_500_with_the_request_id(probe_client, caplog) -> None:
    caplog.set_level(logging.INFO)
    response = await probe_client.get("/v1/contract-probe/crash", headers={"X-Request-Id": "crash-probe-1"})
    error = assert_error(response, 500, "internal_error")
    assert response.headers["x-request-id"] == "crash-probe-1"
    assert error["details"] == {"request_id": "crash-probe-1"}
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    # The log line of the failure carries the same request id, so an operator can find it.
    logged = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "http.unhandled_error"]
    assert logged and logged[-1].get("request_id") == "crash-probe-1", logged


async def test_unhandled_error_without_an_incoming_id_gets_a_generated_one(probe_client) -> None:
    response = await probe_client.get("/v1/contract-probe/crash")
    error = assert_error(response, 500, "internal_error")
    generated = response.headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert error["details"] == {"request_id": generated}


# --- mass assignment -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"role": "owner"},
        {"is_platform_admin": True},
        {"status": "active"},
        {"email_verified": True},
        {"billing_mode": "invoice"},
    ],
)
async def test_signup_refuses_fields_a_client_could_mass_assign(client, session, extra) -> None:
    users, accounts = await count(session, User), await count(session, Account)
    body = signup_body(**extra)
    error = assert_error(await client.post("/v1/auth/signup", json=body), 422, "validation_error")
    assert [["body", name] for name in extra] == [d["loc"] for d in error["details"]]
    assert {d["type"] for d in error["details"]} == {"extra_forbidden"}
    assert await count(session, User) == users and await count(session, Account) == accounts
    assert await session.scalar(select(User).where(User.email == body["email"])) is None


@pytest.mark.parametrize(
    "extra",
    [
        {"status": "active"},
        {"suspension_reasons": []},
        {"billing_mode": "invoice"},
        {"id": str(uuid.uuid4())},
        {"role": "owner"},
    ],
)
async def test_account_update_refuses_status_billing_and_suspension(client, signup, extra) -> None:
    me = await signup(account_name="Before")
    before = (await client.get(f"/v1/accounts/{me.account_id}", headers=me.headers)).json()
    response = await client.patch(
        f"/v1/accounts/{me.account_id}", json={"name": "After", **extra}, headers=me.headers
    )
    assert_error(response, 422, "validation_error")
    after = (await client.get(f"/v1/accounts/{me.account_id}", headers=me.headers)).json()
    assert after == before
    assert after["name"] == "Before"


async def test_member_role_change_refuses_is_platform_admin(client, session, signup) -> None:
    owner = await signup(account_name="Team")
    member = await signup(account_name="Own")
    session.add(Membership(account_id=uuid.UUID(owner.account_id), user_id=uuid.UUID(member.user_id), role="member"))
    await session.flush()
    response = await client.patch(
        f"/v1/accounts/{owner.account_id}/members/{member.user_id}",
        json={"role": "admin", "is_platform_admin": True},
        headers=owner.headers,
    )
    error = assert_error(response, 422, "validation_error")
    assert ["body", "is_platform_admin"] in [d["loc"] for d in error["details"]]
    members = (await client.get(f"/v1/accounts/{owner.account_id}/members", headers=owner.headers)).json()["items"]
    assert {m["user_id"]: m["role"] for m in members}[member.user_id] == "member"
    me = (await client.get("/v1/me", headers=member.headers)).json()
    assert me["user"]["is_platform_admin"] is False


async def test_api_key_creation_refuses_ownership_fields(client, signup) -> None:
    me = await signup()
    response = await client.post(
        "/v1/me/api-keys",
        json={"name": "k", "scopes": ["account:read"], "user_id": str(uuid.uuid4()), "is_platform_admin": True},
        headers=me.headers,
    )
    assert_error(response, 422, "validation_error")
    keys = (await client.get("/v1/me/api-keys", headers=me.headers)).json()["items"]
    assert keys == []


# --- request ids -----------------------------------------------------------------------------------------------


async def test_every_kind_of_response_carries_a_request_id(client, signup, settings) -> None:
    me = await signup()
    responses = [
        await client.get("/healthz"),
        await client.get("/v1/me", headers=me.headers),
        await client.get("/v1/me"),
        await client.get("/v1/nope"),
        await client.put("/v1/me"),
        await client.post("/v1/auth/signup", json={}),
        await client.post("/v1/auth/signup", content=b"{", headers={"Content-Type": "application/json"}),
        await client.post(
            "/v1/auth/signup",
            content=b"x" * (settings.max_body_bytes + 1),
            headers={"Content-Type": "application/json"},
        ),
    ]
    assert [r.status_code for r in responses] == [200, 200, 401, 404, 405, 422, 422, 413]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids) and len(set(ids)) == len(ids), ids


async def test_a_sane_incoming_request_id_is_echoed(client) -> None:
    for incoming in ("abc-123", "req_" + "9" * 60, str(uuid.uuid4())):
        response = await client.get("/healthz", headers={"X-Request-Id": incoming})
        assert response.headers["x-request-id"] == incoming
        error = await client.get("/v1/nope", headers={"X-Request-Id": incoming})
        assert error.headers["x-request-id"] == incoming


@pytest.mark.parametrize("incoming", ["x" * 65, "tab\there", "bell\x07"], ids=["too-long", "tab", "control"])
async def test_an_insane_incoming_request_id_is_replaced(client, incoming) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": incoming})
    generated = response.headers["x-request-id"]
    assert generated != incoming
    assert len(generated) == 32 and int(generated, 16) >= 0


# --- no echo of submitted secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/auth/signup", {"email": "not-an-email", "password": CANARY_PASSWORD, "account_name": "Echo"}),
        ("/v1/auth/signup", {"email": "echo@example.com", "password": CANARY_PASSWORD * 20, "account_name": "Echo"}),
        ("/v1/auth/signup", {"email": "echo@example.com", "password": [CANARY_PASSWORD], "account_name": "Echo"}),
        ("/v1/auth/signup", {"email": "echo@example.com", "password": CANARY_PASSWORD, "account_name": "Echo",
                             "role": CANARY_PASSWORD}),
        ("/v1/auth/login", {"email": "echo@example.com", "password": {"value": CANARY_PASSWORD}}),
        ("/v1/auth/login", {"email": 5, "password": CANARY_PASSWORD}),
    ],
    ids=["bad-email", "too-long", "list", "extra-field", "object", "bad-email-type"],
)
async def test_validation_errors_never_echo_the_password(client, path, body) -> None:
    response = await client.post(path, json=body)
    error = assert_error(response, 422, "validation_error")
    assert error["details"], "the error says what was wrong"
    assert CANARY_PASSWORD not in response.text
    assert all(set(d) == {"loc", "msg", "type"} for d in error["details"]), error["details"]


async def test_malformed_json_never_echoes_the_password(client) -> None:
    raw = f'{{"email": "echo@example.com", "password": "{CANARY_PASSWORD}", "account_name": '.encode()
    response = await client.post("/v1/auth/signup", content=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 422, "invalid_json")
    assert CANARY_PASSWORD not in response.text


# --- the documented contract -----------------------------------------------------------------------------------


def test_every_documented_json_error_response_is_the_error_shape(app) -> None:
    """Generated clients read errors by the OpenAPI: each documented 4xx/5xx JSON body is ErrorResponse."""
    document = app.openapi()
    wrong = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if not status.isdigit() or int(status) < 400:
                    continue
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if schema is not None and schema.get("$ref") != "#/components/schemas/ErrorResponse":
                    wrong.append(f"{method.upper()} {path} {status}: {schema}")
    assert wrong == []
    error = document["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["error"]


async def test_probe_routes_are_only_in_the_probe_app(app, client) -> None:
    """The throwaway routes above are mounted on a separate app, never on the one the suite shares."""
    assert "/v1/contract-probe/crash" not in app.openapi()["paths"]
    assert_error(await client.get("/v1/contract-probe/crash"), 404, "not_found")



async def test_the_served_openapi_is_the_documented_one(app, client) -> None:
    served = await client.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == app.openapi()
    assert "HTTPValidationError" not in served.text


# --- NUL characters (PostgreSQL text cannot hold them) ---------------------------------------------------------


async def test_nul_in_a_body_string_is_422_at_the_edge(client, session, signup) -> None:
    users = await count(session, User)
    body = signup_body(account_name="nul\x00name")
    error = assert_error(await client.post("/v1/auth/signup", json=body), 422, "validation_error")
    assert [d["loc"] for d in error["details"]] == [["body", "account_name"]]
    assert await count(session, User) == users
    me = await signup()
    key = await client.post("/v1/me/api-keys", json={"name": "\x00", "scopes": ["account:read"]}, headers=me.headers)
    assert_error(key, 422, "validation_error")


async def test_nul_in_a_query_string_is_422_not_500(client, session, signup) -> None:
    admin = await signup()
    user = await session.get(User, uuid.UUID(admin.user_id))
    user.is_platform_admin = True
    await session.flush()
    response = await client.get("/v1/admin/audit", params={"action": "\x00"}, headers=admin.headers)
    assert_error(response, 422, "validation_error")
    # The request after it is served normally: the failed statement left no broken transaction behind.
    assert (await client.get("/v1/admin/audit", params={"action": "user.signup"}, headers=admin.headers)).status_code == 200
