"""schemathesis over the whole live OpenAPI, against the app on the real database (issue 3 §10).

schemathesis generates the requests (valid ones and deliberately invalid ones) from `app.openapi()`; they are
sent through the test's own ASGI client, so they run inside the test's transaction on the real PostgreSQL
(schemathesis' own ASGI transport would drive the app from another event loop, outside that transaction).
Every response must be no server error, carry a documented status code, content type and headers, match the
documented schema, and invalid input must be refused.

Each operation runs as a freshly signed-up caller (a platform admin for admin routes, the account's owner
otherwise) and again anonymously. Path parameters are often the caller's own real ids (account, member,
invite, API key, subscription, instance), so the happy paths are reached as well as the 404s.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jushostit.app import api_routes
from jushostit.auth.dependencies import AuthRule, route_rule
from jushostit.models import User
from tests.streaming import first_response, is_streaming
from tests.test_authorization_matrix import documented_path

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

OPERATIONS = sorted(
    (f"{method} {documented_path(route.path)}", route_rule(route.dependant))
    for route in api_routes() for method in route.methods
)
LABELS = [label for label, _ in OPERATIONS]
RULES = dict(OPERATIONS)

FUZZ_SETTINGS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
}


@dataclass
class World:
    """Who calls and which real ids they may use; the strategy is built once per test, not per example."""

    app: Any
    operation: Any
    headers: dict[str, str]
    path_values: dict[str, str] = field(default_factory=dict)
    _strategy: Any = None

    @property
    def streams(self) -> bool:
        return is_streaming(self.operation.definition.raw)

    def strategy(self) -> Any:
        if self._strategy is None:
            positive, negative = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
            options = [self.operation.as_strategy(generation_mode=positive)]
            if self.operation.path_parameters or self.operation.query or self.operation.body:
                options.append(self.operation.as_strategy(generation_mode=negative))
            if self.path_values:
                options.append(self.operation.as_strategy(generation_mode=positive, path_parameters=self.path_values))
            self._strategy = st.one_of(options)
        return self._strategy


async def real_path_values(client: httpx.AsyncClient, me: Any, names: set[str]) -> dict[str, str]:
    """The caller's own resources for the path parameters this operation takes."""
    headers = me.headers
    values: dict[str, str] = {}
    if "account_id" in names:
        values["account_id"] = me.account_id
    if "user_id" in names:
        values["user_id"] = me.user_id
    if "plan_code" in names:
        values["plan_code"] = "starter"
    if "invite_id" in names:
        invite = await client.post(
            f"/v1/accounts/{me.account_id}/invites", json={"email": "fuzz-invitee@example.com"}, headers=headers
        )
        assert invite.status_code == 201, invite.text
        values["invite_id"] = invite.json()["id"]
    if "key_id" in names:
        key = await client.post("/v1/me/api-keys", json={"name": "fuzz", "scopes": ["account:read"]}, headers=headers)
        assert key.status_code == 201, key.text
        values["key_id"] = key.json()["id"]
    if names & {"subscription_id", "instance_id"}:
        checkout = await client.post(f"/v1/accounts/{me.account_id}/checkout", json={"plan": "free"}, headers=headers)
        assert checkout.status_code == 201, checkout.text
        values["subscription_id"] = checkout.json()["subscription"]["id"]
    if "instance_id" in names:
        instance = await client.post(
            f"/v1/accounts/{me.account_id}/instances", json={"template": "static-site", "name": "fuzz"}, headers=headers
        )
        assert instance.status_code == 201, instance.text
        values["instance_id"] = instance.json()["id"]
    return {name: value for name, value in values.items() if name in names}


_schemas: dict[tuple[int, ...], Any] = {}


def operation_of(app: Any, label: str) -> Any:
    # Every app of the run is built from the same routes: load the schema once, from the first live app's
    # OpenAPI (building the OpenAPI and loading it take about a second, which per test would add up).
    key = tuple(id(route) for route in api_routes())
    if key not in _schemas:
        _schemas.clear()
        schema = schemathesis.openapi.from_dict(app.openapi())
        # The callers' credentials are the test's own (World.headers): no Authorization header is generated from
        # the security schemes, whose "negative" cases the real credentials sent anyway would contradict.
        schema.config.generation.update(with_security_parameters=False)
        _schemas[key] = schema
    operation = _schemas[key].find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the OpenAPI"
    return operation


@pytest.fixture
async def signed_in(app, client: httpx.AsyncClient, signup, session, request: pytest.FixtureRequest) -> World:
    label = request.node.callspec.params["label"]
    me = await signup(account_name="Fuzz Co")
    if RULES[label] is AuthRule.admin:
        user = await session.get(User, uuid.UUID(me.user_id))
        assert user is not None
        user.is_platform_admin = True
        await session.flush()
    operation = operation_of(app, label)
    names = set(re.findall(r"{(\w+)}", operation.path))
    return World(app, operation, me.headers, await real_path_values(client, me, names))


@pytest.fixture
def anonymous(app, request: pytest.FixtureRequest) -> World:
    return World(app, operation_of(app, request.node.callspec.params["label"]), {})


async def send(client: httpx.AsyncClient, world: World, case: Any) -> tuple[httpx.Response, dict[str, str]]:
    kwargs = case.as_transport_kwargs(base_url=str(client.base_url))
    headers = {**kwargs.get("headers", {}), **world.headers}
    if world.streams:
        path = kwargs["url"].removeprefix(str(client.base_url).rstrip("/"))
        return await first_response(world.app, kwargs["method"], path, headers=headers, params=kwargs.get("params")), headers
    request: dict[str, Any] = {"headers": headers, "params": kwargs.get("params") or None}
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif "data" in kwargs:
        data = kwargs["data"]
        request["content" if isinstance(data, (bytes, str)) else "data"] = data
    assert not kwargs.get("files"), "no operation takes multipart bodies"
    response = await client.request(kwargs["method"], kwargs["url"], cookies=kwargs.get("cookies") or None, **request)
    return response, headers


async def fuzz_one(client: httpx.AsyncClient, world: World, data: st.DataObject) -> None:
    case = data.draw(world.strategy(), label="case")
    response, headers = await send(client, world, case)
    label = world.operation.label
    assert response.status_code < 500, f"{label}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and isinstance(body["error"]["code"], str), f"{label}: {response.text}"
    assert response.headers.get("x-request-id"), label
    case.validate_response(response, checks=CHECKS, headers=headers)


@pytest.mark.parametrize("label", LABELS)
@settings(max_examples=10, **FUZZ_SETTINGS)
@given(data=st.data())
async def test_operation_conforms_signed_in(label: str, data: st.DataObject, signed_in: World, client) -> None:
    await fuzz_one(client, signed_in, data)


@pytest.mark.parametrize("label", LABELS)
@settings(max_examples=4, **FUZZ_SETTINGS)
@given(data=st.data())
async def test_operation_conforms_anonymous(label: str, data: st.DataObject, anonymous: World, client) -> None:
    await fuzz_one(client, anonymous, data)


def test_the_fuzzed_operations_are_every_operation_of_the_live_openapi(app) -> None:
    documented = sorted(f"{method.upper()} {path}" for path, item in app.openapi()["paths"].items() for method in item)
    assert LABELS == documented
    assert all(rule is not None for _, rule in OPERATIONS)
