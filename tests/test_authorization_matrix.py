"""The authorization matrix over the live OpenAPI (issue 3 §6, REFERENCE §11).

Every operation the app documents is mapped to its APIRoute and the auth rule it declared. Then each rule's
promise is checked against the real app on the real database:

- `user`, `account`, `admin`: an anonymous caller (and one with a forged token) gets 401 in the error shape;
- `account`: a signed-in user of tenant A naming tenant B's account or B's instance (with B's real member,
  invite, subscription ids) gets 404, exactly as for an id that names nothing, and nothing of B changes;
- `admin`: a signed-in non-admin gets 403, the platform admin gets through.

Path parameters are filled from `Tenant.path_values()`, keyed by parameter name; required query parameters from
QUERIES, keyed by parameter name; request bodies from BODIES, keyed by the request model's schema name. An
unknown parameter name fails the test, so a new route forces this file to be updated with a real resource of the
other tenant (or a valid query), and no request is refused for what it lacks rather than for who sends it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import fastapi.routing
import httpx
import pytest
from fastapi import APIRouter, Depends
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import jushostit.app as app_module
from jushostit.app import api_routes, check_route_rules, create_app, page_routes
from jushostit.auth.dependencies import AuthRule, public, require_user, route_rule
from jushostit.invoices.repository import InvoiceRepository
from jushostit.invoices.service import invoice_number
from jushostit.kit.db import utcnow
from jushostit.models import (
    Account,
    AccountPlacement,
    BrowserSession,
    Cluster,
    ClusterNode,
    CreditPurchase,
    Instance,
    Invite,
    Invoice,
    InvoiceLine,
    Membership,
    Platform,
    Role,
    Subscription,
    User,
    WebhookEvent,
)
from tests.conftest import TEST_PASSWORD, Signup
from tests.streaming import first_response, is_streaming

METHODS = {"get", "put", "post", "patch", "delete"}

# Path parameters that say which tenant a request is about; every `account` route names one of them.
TENANT_KEYS = ("account_id", "instance_id", "session_id")


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict[str, Any]
    route: APIRoute
    rule: AuthRule | None

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def path_params(self) -> list[str]:
        return [p["name"] for p in self.spec.get("parameters", []) if p["in"] == "path"]

    @property
    def body_schema(self) -> str | None:
        content = self.spec.get("requestBody", {}).get("content", {})
        if "application/json" not in content:  # none, or a raw body (a file's content): sent empty
            return None
        schema = content["application/json"]["schema"]
        # A body of one of several models (a template of some kind) is named after the first.
        reference = schema["$ref"] if "$ref" in schema else schema["anyOf"][0]["$ref"]
        return reference.rsplit("/", 1)[-1]

    @property
    def streams(self) -> bool:
        return is_streaming(self.spec)


def documented_path(path: str) -> str:
    """A route's path as the OpenAPI writes it: a `{name:path}` parameter is `{name}` there."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def operations(application: Any) -> list[Operation]:
    routes = {(method, documented_path(route.path)): route for route in api_routes() for method in route.methods}
    found = []
    for path, item in application.openapi()["paths"].items():
        for method, spec in item.items():
            if method not in METHODS:
                continue
            route = routes.get((method.upper(), path))
            assert route is not None, f"{method.upper()} {path} is in the OpenAPI but not in api_routes()"
            found.append(Operation(method.upper(), path, spec, route, route_rule(route.dependant)))
    return found


def mounted_api_routes(application: Any) -> list[APIRoute]:
    """The API routes the app really serves (FastAPI ≥ 0.165 keeps each included router as one entry)."""
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_route_contexts is None:
        return [route for route in application.routes if isinstance(route, APIRoute)]
    served = []
    for context in iter_route_contexts(application.routes):
        if isinstance(context.original_route, APIRoute):
            assert context.path == context.original_route.path, "a router was included under an extra prefix"
            served.append(context.original_route)
    return served


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


# A valid body for every request model a `user` or `account` route takes, so that a refusal is never a
# validation error and the owner's control requests really do something. Admin routes whose model is not
# listed get `{}`: the admin test only checks that the gate opened.
BODIES: dict[str, Callable[[], dict[str, Any]]] = {
    "AccountUpdate": lambda: {"name": "Renamed by a stranger"},
    "MemberUpdate": lambda: {"role": "admin"},
    "InviteCreate": lambda: {"email": f"stranger-{uuid.uuid4().hex[:8]}@example.com", "role": "member"},
    "InviteAccept": lambda: {"token": "jhi-inv_not-a-real-token"},
    "ApiKeyCreate": lambda: {"name": "matrix key", "scopes": ["account:read"]},
    "CheckoutCreate": lambda: {"plan": "free"},
    "SubscriptionCancel": lambda: {"at": "period_end"},
    "PlanChangeCreate": lambda: {"plan": "pro"},
    "PackPaymentRecord": dict,
    "SubscriptionRenew": dict,
    "InstanceCreate": lambda: {"template": "static-site", "name": f"matrix-{uuid.uuid4().hex[:8]}"},
    "PlanUpdate": lambda: {"name": "Renamed plan"},
    "SuspendRequest": lambda: {"reason": "admin", "note": "authorization matrix"},
    "BillingModeUpdate": lambda: {"billing_mode": "invoice"},
    "ContractUpdate": lambda: {"ends_at": "2031-01-01T00:00:00Z"},
    "UnsuspendRequest": lambda: {"reason": "admin"},
    "BudgetUpdate": lambda: {"monthly_limit_minor": 1000, "currency": "EUR"},  # the shipped plans' currency
    "SessionCreate": dict,
}

# A valid value for every required query parameter, keyed by the parameter's name (optional ones are left out).
QUERIES: dict[str, Callable[[], str]] = {
    "from": lambda: (utcnow() - timedelta(days=1)).isoformat(),  # the usage range: the last day
    "to": lambda: utcnow().isoformat(),
}


def body_for(operation: Operation) -> dict[str, Any] | None:
    name = operation.body_schema
    if name is None:
        return None
    if name not in BODIES:
        if operation.rule is AuthRule.admin:
            return {}
        pytest.fail(f"{operation.label} takes {name}: add a valid example of it to BODIES in {__file__}")
    return BODIES[name]()


def query_for(operation: Operation) -> dict[str, str]:
    query = {}
    for parameter in operation.spec.get("parameters", []):
        if parameter["in"] != "query" or not parameter.get("required"):
            continue
        name = parameter["name"]
        if name not in QUERIES:
            pytest.fail(f"{operation.label} requires the query parameter {name!r}: add a valid value to QUERIES in "
                        f"{__file__}")
        query[name] = QUERIES[name]()
    return query


def fill_path(operation: Operation, values: dict[str, str]) -> str:
    path = operation.path
    for name in operation.path_params:
        if name not in values:
            pytest.fail(
                f"{operation.label} has the path parameter {name!r}: add it to Tenant.path_values in {__file__} "
                "(a real resource of that kind owned by the tenant)"
            )
        path = path.replace("{" + name + "}", values[name])
    return path


async def call(
    app: Any,
    client: httpx.AsyncClient,
    operation: Operation,
    values: dict[str, str],
    headers: dict[str, str],
    *,
    with_body: bool = True,
) -> httpx.Response:
    path = fill_path(operation, values)
    if query := query_for(operation):
        path = f"{path}?{urlencode(query)}"
    if operation.streams:
        return await first_response(app, operation.method, path, headers=headers)
    body = body_for(operation) if with_body else None
    return await client.request(operation.method, path, json=body, headers=headers)


@dataclass
class Tenant:
    owner: Signup
    member_id: str
    invite_id: str
    api_key_id: str
    subscription_id: str
    instance_id: str
    webhook_event_id: str = ""
    invoice_id: str = ""
    purchase_id: str = ""
    cluster_id: str = ""
    platform_id: str = ""
    session_id: str = ""

    def path_values(self) -> dict[str, str]:
        """Every path parameter name any route uses, filled with this tenant's real resources."""
        return {
            "account_id": self.owner.account_id,
            "user_id": self.member_id,
            "invite_id": self.invite_id,
            "key_id": self.api_key_id,
            "subscription_id": self.subscription_id,
            "instance_id": self.instance_id,
            "plan_code": "starter",  # plans are the platform's, not a tenant's
            "provider": "no-such-provider",  # OIDC providers are public routes
            "path": "index.html",  # a file of the tenant's site (PUT .../files/{path})
            "event_id": self.webhook_event_id,  # a provider's event about the tenant (admin routes)
            "invoice_id": self.invoice_id,
            "pack_code": "credits-1k",  # packs are the platform's, not a tenant's
            "purchase_id": self.purchase_id,
            "cluster_id": self.cluster_id,  # the cluster the tenant is placed on (admin routes)
            "node_name": "worker-1",  # a node of that cluster
            "platform_id": self.platform_id,  # a data platform seats are sold on (admin routes)
            "session_id": self.session_id,  # a browser session of the tenant's (ended: ending it changes nothing)
        }


async def make_tenant(client: httpx.AsyncClient, session: AsyncSession, signup: Any, name: str) -> Tenant:
    owner = await signup(account_name=name)
    # A plain member besides the owner, so a leaked write would not be stopped by the last-owner rule.
    member = await signup(account_name=f"{name} member's own")
    session.add(Membership(account_id=uuid.UUID(owner.account_id), user_id=uuid.UUID(member.user_id), role=Role.member))
    await session.flush()
    headers = owner.headers
    invite = await client.post(
        f"/v1/accounts/{owner.account_id}/invites",
        json={"email": f"invitee-{uuid.uuid4().hex[:8]}@example.com", "role": "member"},
        headers=headers,
    )
    assert invite.status_code == 201, invite.text
    key = await client.post("/v1/me/api-keys", json={"name": f"{name} key", "scopes": ["account:read"]}, headers=headers)
    assert key.status_code == 201, key.text
    checkout = await client.post(f"/v1/accounts/{owner.account_id}/checkout", json={"plan": "free"}, headers=headers)
    assert checkout.status_code == 201, checkout.text
    instance = await client.post(
        f"/v1/accounts/{owner.account_id}/instances", json={"template": "static-site", "name": "site"}, headers=headers
    )
    assert instance.status_code == 201, instance.text
    event = WebhookEvent(
        provider="stripe", event_id=f"evt_{uuid.uuid4().hex}", event_type="invoice.paid", account_id=owner.account_id,
        payload={}, created_at_provider=utcnow(), received_at=utcnow(), status="processed",
    )
    # A credit pack the account asked to buy (pending: paid off-platform, an operator confirms it).
    purchase = CreditPurchase(account_id=uuid.UUID(owner.account_id), pack_code="credits-1k", credits=1000,
                              price_minor=1000, currency="EUR", provider="manual", status="pending")
    session.add_all([event, purchase])
    await session.flush()
    return Tenant(
        owner,
        member.user_id,
        invite.json()["id"],
        key.json()["id"],
        checkout.json()["subscription"]["id"],
        instance.json()["id"],
        str(event.id),
        str(await an_invoice(session, owner.account_id)),
        str(purchase.id),
        str(await a_cluster(session, owner.account_id)),
        str(await a_platform(session)),
        str(await a_browser_session(session, owner.account_id, instance.json()["id"])),
    )


async def a_cluster(session: AsyncSession, account_id: str) -> uuid.UUID:
    """A cluster with a node, the account placed on it (so it cannot be deleted), as registration and the node
    observation leave them."""
    cluster = Cluster(
        name=f"k3s-{uuid.uuid4().hex[:8]}", api_server="https://10.0.0.5:6443", tls_verified=True,
        kubernetes_version="v1.31.4+k3s1", base_domain="apps.example.com", ingress_class="traefik",
        ingress_namespace="kube-system", pod_cidr="10.42.0.0/16", service_cidr="10.43.0.0/16",
        cpu_overcommit=Decimal(3), memory_overcommit=Decimal(1), headroom_percent=30, cordoned=False,
    )
    session.add(cluster)
    await session.flush()
    session.add_all([
        ClusterNode(cluster_id=cluster.id, name="worker-1", cpu_capacity_millicores=16_000, memory_capacity_mib=32_768,
                    cpu_allocatable_millicores=15_000, memory_allocatable_mib=30_000, pods_allocatable=110,
                    cpu_requested_millicores=0, memory_requested_mib=0, cpu_limits_millicores=0, memory_limits_mib=0,
                    pods=0, conditions={"Ready": "True"}, unschedulable=False, no_schedule_taints=[], cordoned=False,
                    observed_at=utcnow()),
        AccountPlacement(account_id=uuid.UUID(account_id), cluster_id=cluster.id),
    ])
    await session.flush()
    return cluster.id


async def a_browser_session(session: AsyncSession, account_id: str, pool_id: str) -> uuid.UUID:
    """A browser session of the account, ended (as its end leaves it)."""
    row = BrowserSession(account_id=uuid.UUID(account_id), pool_id=uuid.UUID(pool_id),
                         token_hash=uuid.uuid4().hex + uuid.uuid4().hex, status="ended", end_reason="ended",
                         refunded=False, max_seconds=300, started_at=utcnow(), ended_at=utcnow(), duration_ms=1000)
    session.add(row)
    await session.flush()
    return row.id


async def a_platform(session: AsyncSession) -> uuid.UUID:
    """A registered Hopsworks platform, as registration leaves it (its key is not needed here)."""
    platform = Platform(name=f"hops-{uuid.uuid4().hex[:8]}", kind="hopsworks", base_url="https://hops.example.com",
                        edition="community", project_limits={"owner": 5, "admin": 5, "member": 0},
                        checked_at=utcnow())
    session.add(platform)
    await session.flush()
    return platform.id


async def an_invoice(session: AsyncSession, account_id: str) -> uuid.UUID:
    """An open invoice of the account, due in a month, numbered as an operator's would be."""
    now = utcnow()
    seq = await InvoiceRepository(session).take_number(now.year)
    invoice = Invoice(
        account_id=uuid.UUID(account_id), number=invoice_number(now.year, seq), year=now.year, seq=seq,
        currency="EUR", total_minor=1000, status="open", issued_at=now, due_at=now + timedelta(days=30),
        lines=[InvoiceLine(position=1, description="Hosting", quantity=1, unit_amount_minor=1000, amount_minor=1000)],
    )
    session.add(invoice)
    await session.flush()
    return invoice.id


async def login(client: httpx.AsyncClient, user: Signup) -> dict[str, str]:
    response = await client.post("/v1/auth/login", json={"email": user.email, "password": TEST_PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def make_platform_admin(session: AsyncSession, user: Signup) -> None:
    row = await session.get(User, uuid.UUID(user.user_id))
    assert row is not None
    row.is_platform_admin = True
    await session.flush()


# --- the inventory ---------------------------------------------------------------------------------------------


def test_openapi_operations_are_exactly_the_routes_and_all_declare_a_rule(app) -> None:
    documented = {(op.method, op.path) for op in operations(app)}
    declared = {(method, documented_path(route.path)) for route in api_routes() for method in route.methods}
    mounted = {(method, documented_path(route.path)) for route in mounted_api_routes(app) for method in route.methods}
    assert documented == declared, "a route is hidden from the OpenAPI, or documented without being in ROUTERS"
    pages = {(method, route.path) for route in page_routes() for method in route.methods}
    assert mounted == declared | pages, "the app serves an API route that is not in ROUTERS (or the pages)"
    assert all(route_rule(route.dependant) is AuthRule.public for route in page_routes())
    assert [op.label for op in operations(app) if op.rule is None] == []
    # The matrix below has something to check for each kind of rule.
    assert {op.rule for op in operations(app)} == set(AuthRule)


def test_every_account_route_names_its_tenant_in_the_path(app) -> None:
    unnamed = [
        op.label for op in operations(app) if op.rule is AuthRule.account and not set(op.path_params) & set(TENANT_KEYS)
    ]
    assert unnamed == [], f"extend TENANT_KEYS (and Tenant.path_values) for {unnamed}"


def test_matrix_knows_every_path_parameter_and_body(app) -> None:
    signed_up = Signup("x@example.com", "u", "a", {"access_token": "t", "refresh_token": "r"})
    values = Tenant(signed_up, "m", "i", "k", "s", "n").path_values()
    for op in operations(app):
        fill_path(op, values)
        query_for(op)
        if op.rule is not AuthRule.public:
            body_for(op)


def test_a_route_without_a_declared_rule_is_refused() -> None:
    router = APIRouter(prefix="/v1/forgotten")

    @router.get("/open")
    async def forgotten() -> dict[str, str]:
        return {"oops": "no auth"}

    @router.get("/fine", dependencies=[Depends(public())])
    async def fine() -> dict[str, str]:
        return {}

    @router.get("/signed-in")
    async def signed_in(principal: Any = Depends(require_user())) -> dict[str, str]:
        return {}

    routes = [r for r in router.routes if isinstance(r, APIRoute)]
    # A rule declared on the route or as a parameter dependency both count.
    check_route_rules([r for r in routes if r.path != "/v1/forgotten/open"])
    with pytest.raises(RuntimeError, match=r"\['GET'\] /v1/forgotten/open"):
        check_route_rules(routes)
    check_route_rules()  # the shipped routes all declare one


def test_the_app_refuses_to_start_with_an_unruled_router(settings, container, monkeypatch) -> None:
    router = APIRouter(prefix="/v1/forgotten")

    @router.post("/thing")
    async def forgotten() -> dict[str, str]:
        return {}

    monkeypatch.setattr(app_module, "ROUTERS", (*app_module.ROUTERS, router))
    with pytest.raises(RuntimeError, match="/v1/forgotten/thing"):
        create_app(settings, container)


# --- anonymous callers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-jwt", "Bearer jhi_not-a-real-api-key", "Basic dXNlcjpwYXNz"],
    ids=["no-header", "garbage-jwt", "unknown-api-key", "basic-auth"],
)
async def test_every_non_public_route_answers_an_anonymous_caller_401(
    app, client, session, signup, authorization
) -> None:
    tenant = await make_tenant(client, session, signup, "Anon Target")
    values = tenant.path_values()
    headers = {"Authorization": authorization} if authorization else {}
    checked = []
    for op in operations(app):
        if op.rule is AuthRule.public:
            continue
        response = await call(app, client, op, values, headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        checked.append(op.label)
    assert len(checked) >= 10


async def test_the_same_requests_signed_in_are_not_401(app, client, session, signup) -> None:
    """The control for the 401s: with a token the requests pass the gate (a fresh session each, as logout is
    one of the routes)."""
    tenant = await make_tenant(client, session, signup, "Signed In")
    values = tenant.path_values()
    for op in operations(app):
        if op.rule in (AuthRule.user, AuthRule.account):
            response = await call(app, client, op, values, await login(client, tenant.owner))
            assert response.status_code not in (401, 403), f"{op.label}: {response.text}"
            assert response.status_code < 500, f"{op.label}: {response.text}"


async def test_public_routes_do_not_demand_authentication(app, client) -> None:
    for op in operations(app):
        if op.rule is not AuthRule.public:
            continue
        values = {"provider": "no-such-provider", "plan_code": "free"}
        response = await call(app, client, op, values, {}, with_body=False)
        assert response.status_code != 401, f"{op.label}: {response.text}"
        assert response.status_code < 500, f"{op.label}: {response.text}"


# --- other tenants ---------------------------------------------------------------------------------------------


async def snapshot(session: AsyncSession, tenant: Tenant) -> dict[str, Any]:
    session.expire_all()
    account_id = uuid.UUID(tenant.owner.account_id)
    account = await session.get(Account, account_id)
    assert account is not None
    members = (await session.execute(select(Membership.user_id, Membership.role).where(Membership.account_id == account_id))).all()
    invites = (await session.execute(select(Invite.id, Invite.revoked_at, Invite.email).where(Invite.account_id == account_id))).all()
    subscriptions = (
        await session.execute(
            select(Subscription.id, Subscription.status, Subscription.current_period_end, Subscription.cancel_at_period_end)
            .where(Subscription.account_id == account_id)
        )
    ).all()
    instances = (
        await session.execute(
            select(Instance.id, Instance.name, Instance.delete_requested_at, Instance.desired_level)
            .where(Instance.account_id == account_id)
        )
    ).all()
    return {
        "account": (account.name, account.billing_email, account.status, list(account.suspension_reasons),
                    account.budget_minor, account.budget_currency),
        "members": sorted(map(str, members)),
        "invites": sorted(map(str, invites)),
        "subscriptions": sorted(map(str, subscriptions)),
        "instances": sorted(map(str, instances)),
    }


async def test_every_account_route_hides_another_tenants_resources_as_404(app, client, session, signup) -> None:
    a = await make_tenant(client, session, signup, "Tenant A")
    b = await make_tenant(client, session, signup, "Tenant B")
    before = await snapshot(session, b)
    account_ops = [op for op in operations(app) if op.rule is AuthRule.account]
    assert account_ops, "no account-scoped routes found"
    for op in account_ops:
        response = await call(app, client, op, b.path_values(), a.owner.headers)
        error = assert_error(response, 404)
        # Indistinguishable from an id that names nothing at all.
        unknown = {**b.path_values(), **{key: str(uuid.uuid4()) for key in TENANT_KEYS}}
        ghost = await call(app, client, op, unknown, a.owner.headers)
        assert ghost.status_code == 404 and ghost.json()["error"] == error, op.label
    assert await snapshot(session, b) == before


# Path parameters that name the platform's things (the same for every tenant), not a tenant's resources.
PLATFORM_PATH_PARAMS = frozenset({"plan_code", "pack_code", "provider", "platform_id"})


async def test_own_account_with_another_tenants_sub_resources_is_404(app, client, session, signup) -> None:
    """Tenant scoping lives in the repositories too: A's account id does not unlock B's members, invites or
    subscriptions."""
    a = await make_tenant(client, session, signup, "Tenant A")
    b = await make_tenant(client, session, signup, "Tenant B")
    before = await snapshot(session, b)
    mixed = {**b.path_values(), "account_id": a.owner.account_id}
    checked = []
    for op in operations(app):
        tenants_own = set(op.path_params) - {"account_id"} - PLATFORM_PATH_PARAMS
        if op.rule is AuthRule.account and "account_id" in op.path_params and tenants_own:
            response = await call(app, client, op, mixed, a.owner.headers)
            assert_error(response, 404)
            checked.append(op.label)
    assert len(checked) >= 3
    assert await snapshot(session, b) == before


async def test_the_owner_reaches_every_account_route_of_their_own_account(app, client, session, signup) -> None:
    """The positive control for the 404s above: with their own ids the same requests pass the tenant check."""
    a = await make_tenant(client, session, signup, "Tenant A")
    # Deletions last, so the member, invite and instance are still there for the routes that read or change them.
    for op in sorted(operations(app), key=lambda op: op.method == "DELETE"):
        if op.rule is AuthRule.account:
            response = await call(app, client, op, a.path_values(), a.owner.headers)
            assert response.status_code not in (401, 403, 404), f"{op.label}: {response.text}"
            assert response.status_code < 500, f"{op.label}: {response.text}"


async def test_another_users_api_key_cannot_be_revoked(client, session, signup) -> None:
    a = await signup(account_name="Key A")
    b = await signup(account_name="Key B")
    key = await client.post("/v1/me/api-keys", json={"name": "b", "scopes": ["account:read"]}, headers=b.headers)
    assert key.status_code == 201, key.text
    assert_error(await client.delete(f"/v1/me/api-keys/{key.json()['id']}", headers=a.headers), 404)
    keys = await client.get("/v1/me/api-keys", headers=b.headers)
    assert [(k["id"], k["revoked_at"]) for k in keys.json()["items"]] == [(key.json()["id"], None)]


# --- platform admin ------------------------------------------------------------------------------------------


async def test_admin_routes_refuse_non_admins_with_403_and_admit_the_platform_admin(
    app, client, session, signup
) -> None:
    tenant = await make_tenant(client, session, signup, "Admin Probe")
    values = tenant.path_values()
    admin_ops = [op for op in operations(app) if op.rule is AuthRule.admin]
    assert admin_ops, "no admin routes found"
    for op in admin_ops:
        # An account owner is not a platform admin.
        assert_error(await call(app, client, op, values, tenant.owner.headers), 403, "admin_required")

    admin = await signup(account_name="Platform")
    await make_platform_admin(session, admin)
    for op in admin_ops:
        response = await call(app, client, op, values, admin.headers)
        assert response.status_code not in (401, 403), f"{op.label}: {response.text}"
        assert response.status_code < 500, f"{op.label}: {response.text}"
        if op.method == "GET":
            assert response.status_code == 200, f"{op.label}: {response.text}"


async def test_a_platform_admins_api_key_without_the_admin_scope_is_refused(app, client, session, signup) -> None:
    admin = await signup(account_name="Platform")
    await make_platform_admin(session, admin)
    created = await client.post("/v1/me/api-keys", json={"name": "narrow", "scopes": ["account:read"]}, headers=admin.headers)
    assert created.status_code == 201, created.text
    narrow = {"Authorization": f"Bearer {created.json()['key']}"}
    values = {"account_id": admin.account_id, "plan_code": "starter", "subscription_id": str(uuid.uuid4()),
              "user_id": str(uuid.uuid4()), "event_id": str(uuid.uuid4()), "invoice_id": str(uuid.uuid4()),
              "purchase_id": str(uuid.uuid4()), "pack_code": "credits-1k", "cluster_id": str(uuid.uuid4()),
              "node_name": "worker-1", "platform_id": str(uuid.uuid4())}
    for op in operations(app):
        if op.rule is AuthRule.admin:
            assert_error(await call(app, client, op, values, narrow), 403, "admin_required")
