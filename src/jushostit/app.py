"""The FastAPI application: routers, the error contract, request ids, logs, metrics, the body limit and the
API docs (the OpenAPI with its security schemes, Swagger UI served from the installed package)."""

from __future__ import annotations

import contextlib
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from importlib.util import find_spec
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jushostit import health
from jushostit.accounts.endpoints import router as accounts_router
from jushostit.admin.endpoints import router as admin_router
from jushostit.audit.endpoints import router as audit_router
from jushostit.auth import oidc
from jushostit.auth.dependencies import AUTH_RULE_ATTR, AuthRule, route_rule, rule_dependency
from jushostit.auth.endpoints import router as auth_router
from jushostit.auth.scopes import API_KEY_PREFIX
from jushostit.auth.scopes import Scope as ApiScope
from jushostit.billing.endpoints import router as billing_router
from jushostit.catalog.endpoints import router as catalog_router
from jushostit.clusters.endpoints import router as clusters_router
from jushostit.config import Settings
from jushostit.container import Container
from jushostit.credits.endpoints import router as credits_router
from jushostit.events.broker import Broker
from jushostit.events.endpoints import router as events_router
from jushostit.instances.endpoints import router as instances_router
from jushostit.instances.repository import InstanceRepository
from jushostit.invoices.endpoints import router as invoices_router
from jushostit.kit import context, metrics
from jushostit.kit.client_address import client_address
from jushostit.kit.db import libpq_url
from jushostit.kit.errors import AppError, ErrorResponse, error_payload
from jushostit.metering.endpoints import router as usage_router
from jushostit.models import Role
from jushostit.pages.endpoints import router as pages_router
from jushostit.platforms.endpoints import router as platforms_router
from jushostit.runtime.local.router import LocalRouter, Route, RouteCache, Upstreams
from jushostit.runtime.registry import local_driver
from jushostit.sessions.endpoints import router as sessions_router
from jushostit.webhooks.endpoints import admin_router as webhooks_admin_router
from jushostit.webhooks.endpoints import router as webhooks_router

log = structlog.get_logger("jushostit.http")

HTTP_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


API_DESCRIPTION = """Billing state is the single source of truth for infrastructure entitlement.

**Authentication**: `Authorization: Bearer <access token>` (a signed-in user) or `Authorization: Bearer jhi_…`
(an API key, limited to its scopes); see each operation's security and the `apiKey` scheme for the scopes.

**Errors**: every error, on every route, is `{"error": {"code": "...", "message": "...", "details": ...}}`
(`ErrorResponse`). `code` is stable and machine-readable; `message` is for people; `details` is null, a list of
`{loc, msg, type}` (validation), or an object. The transport-level codes:

| status | code | when |
|---|---|---|
| 400 | `bad_request` (or a route's own code) | a request the route refuses as it stands |
| 401 | `unauthorized`, `invalid_credentials`, `invalid_token` | no valid credentials (`WWW-Authenticate: Bearer`) |
| 403 | `forbidden`, `insufficient_scope`, `insufficient_role`, `admin_required`, `session_required` | not allowed |
| 404 | `not_found` | no such route or resource; another tenant's resources; a malformed id in the path |
| 405 | `method_not_allowed` | the path exists; `Allow` lists its methods |
| 409 | `conflict` (or a route's own code) | the resource's state forbids it |
| 413 | `payload_too_large` | the body is over the limit |
| 415 | `unsupported_media_type` | a body that is not `application/json` |
| 422 | `validation_error`, `invalid_json` | the body, query or headers fail the schema; the body is not JSON |
| 429 | `rate_limited` | slow down (`Retry-After`) |
| 500 | `internal_error` | a bug; `details.request_id` names it in the logs |
| 503 | `not_ready` | `/readyz` only: the database is unreachable or not migrated |
| 503 | `payment_provider_unavailable` | a card checkout could not reach Stripe: retry it |

Requests to an instance's host (`<slug>.localhost` on the local runtime) answer 404 `not_found`, 502
`bad_gateway` and 503 `service_suspended` / `service_starting` / `service_unavailable` (`Retry-After`) in the
same shape.
"""


class BodyTooLarge(StarletteHTTPException):
    """An HTTPException, so FastAPI lets it through when it surfaces while reading the body (anything else
    raised there becomes a 400 "error parsing the body")."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"Request body is larger than {max_bytes} bytes")


class RequestContextMiddleware:
    """Request id, client IP, access log (path without query string) and metrics by route template."""

    def __init__(self, app: ASGIApp, trusted_proxies: Sequence[IPv4Network | IPv6Network] = ()) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if incoming and len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        client = scope.get("client")
        forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1")
        tokens = (
            context.request_id.set(request_id),
            context.client_ip.set(client_address(client[0] if client else None, forwarded, self.trusted_proxies)),
            context.actor.set(context.ANONYMOUS),
        )
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status_holder: dict[str, Any] = {"status": 500, "started": False}
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            if status_holder["started"]:
                raise  # failed mid-response: the server drops the connection
            # Rendered here rather than by Starlette's outermost handler, which runs after this context is
            # gone: the 500 and its log line both carry the request id.
            log.error("http.unhandled_error", error_type=type(error).__name__, exc_info=error)
            response = JSONResponse(
                error_payload("internal_error", "Internal server error", {"request_id": request_id}), status_code=500
            )
            await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.http_requests.labels(scope["method"], template, str(status_holder["status"])).inc()
            metrics.http_latency.labels(scope["method"], template).observe(elapsed)
            log.info(
                "http.request",
                method=scope["method"],
                path=scope["path"],
                route=template,
                status=status_holder["status"],
                duration_ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")
            context.request_id.reset(tokens[0])
            context.client_ip.reset(tokens[1])
            context.actor.reset(tokens[2])


class BodyLimitMiddleware:
    """Refuse bodies over the limit, by Content-Length up front and by counting streamed chunks."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            error_payload("payload_too_large", f"Request body is larger than {self.max_bytes} bytes"), status_code=413
        )
        await response(scope, receive, send)


def _allowed_methods(path: str) -> str:
    """Every method the path answers (RFC 9110 §15.5.6), not only those of the first route that matched it."""
    methods = {method for route in api_routes() if route.path_regex.match(path) for method in route.methods or ()}
    return ", ".join(sorted(methods))


def _validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Never echo the rejected input back: it may be a password.
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]


JSON_MEDIA_TYPE = "application/json"


def is_json_media_type(content_type: str | None) -> bool:
    """application/json or application/<anything>+json, parameters (charset) aside: what FastAPI parses as JSON."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    main, _, sub = media_type.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def _body_not_json(request: Request, errors: list[dict[str, Any]]) -> bool:
    """The route takes a JSON body and the request's was not read as JSON: its Content-Type is another (or none
    was given with a body, which FastAPI hands over as raw bytes)."""
    body_errors = [e for e in errors if tuple(e.get("loc", ()))[:1] == ("body",)]
    if not body_errors:
        return False
    content_type = request.headers.get("content-type")
    if is_json_media_type(content_type):
        return False
    return content_type is not None or any(isinstance(e.get("input"), bytes) for e in body_errors)


def unsupported_media_type() -> JSONResponse:
    return JSONResponse(
        error_payload(
            "unsupported_media_type",
            f"The request body must be JSON (Content-Type: {JSON_MEDIA_TYPE})",
            {"supported": [JSON_MEDIA_TYPE]},
        ),
        status_code=415,
    )


def invalid_json(message: str = "Request body is not valid JSON", details: Any = None) -> JSONResponse:
    return JSONResponse(error_payload("invalid_json", message, details), status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(request: Request, error: AppError) -> JSONResponse:
        return JSONResponse(
            error_payload(error.code, error.message, error.details),
            status_code=error.status_code,
            headers=error.headers,
        )

    @app.exception_handler(DataError)
    async def data_error(request: Request, error: DataError) -> JSONResponse:
        # psycopg refuses, before sending it, a text value holding a NUL character: one can only come from a
        # query or path parameter (request models refuse them), so it is the client's invalid input.
        if "NUL (0x00)" not in str(error.orig):
            raise error
        return JSONResponse(
            error_payload("validation_error", "Text parameters must not contain NUL characters"), status_code=422
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = list(error.errors())
        if errors and all(e.get("loc", ("",))[0] == "path" for e in errors):
            # A malformed id in the path names nothing that exists.
            return JSONResponse(error_payload("not_found", "Not found"), status_code=404)
        if _body_not_json(request, errors):
            return unsupported_media_type()
        if any(e.get("type") == "json_invalid" for e in errors):
            return invalid_json(details=_validation_details(errors))
        return JSONResponse(
            error_payload("validation_error", "Request validation failed", _validation_details(errors)),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and isinstance(error.__cause__, RecursionError):
            # FastAPI answers 400 for a body its JSON parser gives up on: nested too deeply is malformed JSON too.
            return invalid_json("Request body is not valid JSON: nested too deeply")
        if error.status_code == 400 and isinstance(error.__cause__, ValueError):
            # ... and for a body it cannot even decode (not UTF-8).
            return invalid_json()
        code = HTTP_ERROR_CODES.get(error.status_code, "http_error")
        headers = error.headers
        if error.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request.url.path)}
        return JSONResponse(error_payload(code, str(error.detail)), status_code=error.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def unhandled(request: Request, error: Exception) -> JSONResponse:
        log.error("http.unhandled_error", error_type=type(error).__name__, exc_info=error)
        return JSONResponse(
            error_payload("internal_error", "Internal server error", {"request_id": context.request_id.get()}),
            status_code=500,
        )


ROUTERS = (
    health.router,
    auth_router,
    oidc.router,
    accounts_router,
    catalog_router,
    billing_router,
    credits_router,
    invoices_router,
    instances_router,
    sessions_router,
    usage_router,
    events_router,
    audit_router,
    admin_router,
    clusters_router,
    platforms_router,
    webhooks_router,
    webhooks_admin_router,
)


def page_routes() -> list[APIRoute]:
    """The HTML pages e-mailed links open: served beside the API, not part of its OpenAPI."""
    return [route for route in pages_router.routes if isinstance(route, APIRoute)]


def api_routes() -> list[APIRoute]:
    return [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]


ERROR_REF = "#/components/schemas/ErrorResponse"


def error_response(description: str) -> dict[str, Any]:
    """An OpenAPI response whose body is the error contract's shape."""
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ERROR_REF}}}}


def document_errors_in_contract_shape(document: dict[str, Any]) -> None:
    """FastAPI documents the 422 it adds to routes as its own HTTPValidationError; ours, like every error,
    have the contract's shape, so the OpenAPI says ErrorResponse (generated clients parse by it). Every
    operation that takes a JSON body also answers 415 to a body of another media type."""
    prefix = "#/components/schemas/"
    for item in document.get("paths", {}).values():
        for operation in item.values():
            body = operation.get("responses", {}).get("422", {}).get("content", {}).get("application/json", {})
            if body.get("schema", {}).get("$ref") == f"{prefix}HTTPValidationError":
                body["schema"] = {"$ref": ERROR_REF}
            if "requestBody" in operation:
                operation["responses"].setdefault(
                    "415", error_response(f"Unsupported Media Type: the body must be JSON ({JSON_MEDIA_TYPE})")
                )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template=prefix + "{model}")
    for name, schema in {**error_schema.pop("$defs", {}), "ErrorResponse": error_schema}.items():
        schemas.setdefault(name, schema)
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's, now unused
        if f'"{prefix}{name}"' not in json.dumps(document):
            schemas.pop(name, None)


# --- security: what each route's auth rule asks for, in the OpenAPI -------------------------------------------

ACCESS_TOKEN_SCHEME = "accessToken"
API_KEY_SCHEME = "apiKey"

# What each API key scope lets a key do, for the docs. The scopes themselves, and which operations need each,
# come from auth.scopes and the routes' own rules; a scope missing here is still documented by its operations.
SCOPE_MEANINGS = {
    "account:read": "Read the account: its status, entitlement and (owners and admins) billing settings.",
    "account:write": "Change the account's settings (name, billing email).",
    "members:read": "List the account's members and invites.",
    "members:write": "Invite members, change their roles, remove them, revoke invites.",
    "billing:read": "Read the account's subscriptions and invoices.",
    "billing:write": "Check out a plan, renew and cancel subscriptions.",
    "instances:read": "List instances, read their status and logs, stream the account's events.",
    "instances:write": "Order, restart and delete instances.",
    "instances:secrets": "Read an instance's credentials (generated passwords and keys).",
    "admin": "Platform administration (the key's user must also be a platform admin).",
}


class AuthRequirement:
    """A route's auth rule as the OpenAPI tells it: who may call, and the API key scope and account role needed."""

    def __init__(
        self, rule: AuthRule, scope: str | None = None, min_role: Role | None = None, session_only: bool = False
    ) -> None:
        self.rule = rule
        self.scope = scope
        self.min_role = min_role
        self.session_only = session_only

    def security(self) -> list[dict[str, list[str]]]:
        """The OpenAPI security requirement: one of the schemes (an empty list: none needed)."""
        if self.rule is AuthRule.public:
            return []
        if self.session_only:
            return [{ACCESS_TOKEN_SCHEME: []}]
        return [{ACCESS_TOKEN_SCHEME: []}, {API_KEY_SCHEME: [self.scope] if self.scope else []}]

    def sentence(self) -> str:
        key = f"API keys need the `{self.scope}` scope." if self.scope else "Any of their API keys."
        if self.rule is AuthRule.public:
            return "Public: no authentication."
        if self.rule is AuthRule.admin:
            return f"A platform admin. {key}"
        if self.rule is AuthRule.user:
            if self.session_only:
                return "A signed-in user (access token); API keys are refused."
            if self.scope is None:
                return "A signed-in user (access token) or any of their API keys."
            return f"A signed-in user (access token) or an API key. {key}"
        role = "" if self.min_role in (None, Role.member) else f" with the `{self.min_role}` role or above"
        return f"A member of the account{role}; anyone else gets 404. {key}"


def auth_requirement(route: APIRoute) -> AuthRequirement | None:
    """Read from the dependency itself: the factories (`require_user(scope)`, `require_account(scope, min_role)`,
    ...) keep their arguments in the dependency's closure."""
    call = rule_dependency(route.dependant)
    if call is None:
        return None
    rule = AuthRule(getattr(call, AUTH_RULE_ATTR))
    given = inspect.getclosurevars(call).nonlocals
    scope = given.get("scope")
    if rule is AuthRule.admin and scope is None:
        scope = ApiScope.admin  # require_admin: API keys need the admin scope too
    min_role = given.get("min_role")
    return AuthRequirement(
        rule,
        scope=str(scope) if scope is not None else None,
        min_role=Role(min_role) if min_role is not None else None,
        session_only=bool(given.get("session_only", False)),
    )


def _scopes_description(granted: dict[str, list[str]]) -> str:
    lines = [
        (
            f"An API key (`{API_KEY_PREFIX}…`, created with `POST /v1/me/api-keys`), sent as "
            f"`Authorization: Bearer {API_KEY_PREFIX}…`. A key holds only the scopes it was given; a signed-in "
            "session holds them all. Account routes also need the caller's role in the account, whatever the key. "
            "Scopes:"
        ),
        "",
    ]
    for scope in ApiScope:
        meaning = SCOPE_MEANINGS.get(scope.value, "See the operations that need it.")
        operations = ", ".join(f"`{label}`" for label in granted.get(scope.value, [])) or "none yet"
        lines.append(f"- `{scope.value}`: {meaning} Needed by: {operations}.")
    return "\n".join(lines)


def document_security(document: dict[str, Any], routes: Iterable[APIRoute]) -> None:
    """Security schemes (the access token and the API key, both `Authorization: Bearer`), each operation's
    security and the scope it needs (`security: []` for public ones), and every scope with its meaning."""
    granted: dict[str, list[str]] = {}
    for route in routes:
        requirement = auth_requirement(route)
        item = document.get("paths", {}).get(route.path_format)
        if requirement is None or item is None:
            continue
        for method in sorted(route.methods or ()):
            operation = item.get(method.lower())
            if operation is None:
                continue
            operation["security"] = requirement.security()
            auth = f"**Authorization:** {requirement.sentence()}"
            description = operation.get("description")
            operation["description"] = f"{description}\n\n{auth}" if description else auth
            if requirement.scope and not requirement.session_only:
                granted.setdefault(requirement.scope, []).append(f"{method} {route.path_format}")
    components = document.setdefault("components", {})
    components["securitySchemes"] = {
        ACCESS_TOKEN_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A signed-in user's access token (from `POST /v1/auth/login`, `/v1/auth/signup`, "
            "`/v1/auth/refresh`, a magic link or OIDC), sent as `Authorization: Bearer <token>`. It expires after "
            "15 minutes and holds every scope.",
        },
        API_KEY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": f"{API_KEY_PREFIX}… API key",
            "description": _scopes_description(granted),
            "x-scopes": {scope.value: SCOPE_MEANINGS.get(scope.value, "") for scope in ApiScope},
        },
    }


def customise_openapi(app: FastAPI) -> None:
    """The OpenAPI FastAPI builds, with the error contract and the security of every operation."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        document_errors_in_contract_shape(document)
        document_security(document, api_routes())
        return document

    app.openapi = openapi  # type: ignore[method-assign]


# --- the docs page, served from the installed swagger-ui-py package (no CDN: it works offline) ---------------

DOCS_ASSETS_PATH = "/docs/assets"
SWAGGER_UI_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")


def swagger_ui_dir() -> Path:
    """swagger-ui-py's copy of the Swagger UI distribution (its Python module is not imported)."""
    spec = find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def install_docs(app: FastAPI) -> None:
    """/docs (Swagger UI, its assets served by the app itself). ReDoc is not offered: FastAPI's page loads it and
    its fonts from CDNs."""
    directory = swagger_ui_dir()
    missing = [name for name in SWAGGER_UI_ASSETS if not (directory / name).is_file()]
    if missing:
        raise RuntimeError(f"swagger-ui-py lacks {', '.join(missing)} in {directory}")

    async def swagger_ui_page(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — API docs",
            swagger_js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_PATH}/favicon-32x32.png",
            # No validator badge: it would send the OpenAPI's address to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def swagger_ui_asset(request: Request) -> FileResponse:
        name = request.path_params["name"]
        if name not in SWAGGER_UI_ASSETS:
            raise StarletteHTTPException(404, "Not Found")
        return FileResponse(directory / name, headers={"Cache-Control": "public, max-age=86400"})

    app.add_route("/docs", swagger_ui_page, methods=["GET"], include_in_schema=False)
    app.add_route(DOCS_ASSETS_PATH + "/{name}", swagger_ui_asset, methods=["GET"], include_in_schema=False)


def check_route_rules(routes: Iterable[APIRoute] | None = None) -> None:
    """Deny by default: a route that declares no auth rule is a startup error. `routes` defaults to api_routes()."""
    checked = api_routes() if routes is None else routes
    missing = [f"{sorted(route.methods or ())} {route.path}" for route in checked if route_rule(route.dependant) is None]
    if missing:
        raise RuntimeError(f"routes without an auth rule: {', '.join(missing)}")


def create_app(settings: Settings, container: Container) -> FastAPI:
    """Build the app on an open container (the caller owns the database and the job app)."""
    broker = Broker(libpq_url(container.database_url))
    upstreams = Upstreams()  # the local router's keep-alive connections to instances, closed at shutdown

    async def instance_route(slug: str) -> Route | None:
        """The local router asks the runtime-neutral question; the instances repository answers it."""
        async with container.database.reader() as session:
            found = await InstanceRepository(session).route_by_slug(slug)
        return Route(*found) if found else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await broker.close()
        await upstreams.aclose()

    app = FastAPI(
        title="JusHostIt control plane",
        version="1",
        lifespan=lifespan,
        description=API_DESCRIPTION,
        docs_url=None,  # install_docs serves /docs from the installed package, not a CDN
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.database = container.database
    app.state.broker = broker
    app.state.oauth = oidc.build_registry(settings)
    install_error_handlers(app)
    check_route_rules()
    check_route_rules(page_routes())
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(pages_router)  # the pages e-mailed links open: HTML, outside the API and its OpenAPI
    customise_openapi(app)
    install_docs(app)
    # authlib keeps OIDC state and nonce in this signed cookie between login and callback.
    app.add_middleware(
        SessionMiddleware,
        secret_key=oidc.session_cookie_secret(settings),
        session_cookie="jushostit_oidc",
        max_age=600,
        same_site="lax",
        https_only=settings.base_url.startswith("https://"),
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.runtime == "local":  # on Kubernetes, instances are reached through their cluster's Ingress
        # Requests for <slug>.localhost go to the instance; everything else to the API.
        app.add_middleware(
            LocalRouter, driver=local_driver(settings), routes=RouteCache(instance_route), upstreams=upstreams
        )
    app.add_middleware(RequestContextMiddleware, trusted_proxies=settings.trusted_proxies)
    return app
