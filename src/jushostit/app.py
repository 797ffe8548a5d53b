"""The FastAPI application: routers, the error contract, request ids, logs, metrics and the body limit."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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
from jushostit.auth.dependencies import route_rule
from jushostit.auth.endpoints import router as auth_router
from jushostit.billing.endpoints import router as billing_router
from jushostit.catalog.endpoints import router as catalog_router
from jushostit.config import Settings
from jushostit.container import Container
from jushostit.events.broker import Broker
from jushostit.events.endpoints import router as events_router
from jushostit.instances.endpoints import router as instances_router
from jushostit.instances.repository import InstanceRepository
from jushostit.kit import context, metrics
from jushostit.kit.db import libpq_url
from jushostit.kit.errors import AppError, ErrorResponse, error_payload
from jushostit.runtime.local.router import LocalRouter, Route, RouteCache, Upstreams
from jushostit.runtime.registry import local_driver

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

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if incoming and len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        client = scope.get("client")
        tokens = (
            context.request_id.set(request_id),
            context.client_ip.set(client[0] if client else None),
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
    instances_router,
    events_router,
    audit_router,
    admin_router,
)


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


def customise_openapi(app: FastAPI) -> None:
    """The OpenAPI FastAPI builds, with the error contract."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        document_errors_in_contract_shape(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


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
    )
    app.state.database = container.database
    app.state.broker = broker
    app.state.oauth = oidc.build_registry(settings)
    install_error_handlers(app)
    check_route_rules()
    for router in ROUTERS:
        app.include_router(router)
    customise_openapi(app)
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
    # Requests for <slug>.localhost go to the instance (local runtime); everything else to the API.
    app.add_middleware(
        LocalRouter, driver=local_driver(settings), routes=RouteCache(instance_route), upstreams=upstreams
    )
    app.add_middleware(RequestContextMiddleware)
    return app
