"""The local runtime's router on the serve port: `Host: <slug>.localhost[:port]` reaches that instance.

Requests are streamed both ways with the usual forwarded headers. A stopped instance answers 503 with a
plain "suspended" page; an unknown host 404. Everything else goes to the API.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from jushostit.instances.repository import InstanceRepository
from jushostit.kit.db import Database
from jushostit.runtime.local.driver import LOOPBACK, LocalDriver

HOST_PATTERN = re.compile(r"^(?P<slug>[a-z0-9][a-z0-9-]{0,62})\.localhost(:\d+)?$")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}
SUSPENDED_PAGE = "This service is suspended.\n"
UNAVAILABLE_PAGES = {
    "provisioning": "This service is starting.\n",
    "failed": "This service is unavailable.\n",
}


class LocalRouter:
    def __init__(self, app: ASGIApp, *, driver: LocalDriver) -> None:
        self.app = app
        self.driver = driver
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0), follow_redirects=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").lower()
        match = HOST_PATTERN.match(host)
        if match is None:
            await self.app(scope, receive, send)
            return
        database: Database = scope["app"].state.database
        response = await self._route(database, Request(scope, receive), match.group("slug"), host)
        await response(scope, receive, send)

    async def _route(
        self, database: Database, request: Request, slug: str, host: str
    ) -> PlainTextResponse | StreamingResponse:
        async with database.sessionmaker() as session:
            instance = await InstanceRepository(session).by_slug(slug)
        if instance is None:
            return PlainTextResponse("No such service.\n", status_code=404)
        port = self.driver.port_of(instance.account_id, instance.id)
        if instance.observed_status not in {"running", "throttled"} or port is None:
            page = UNAVAILABLE_PAGES.get(instance.observed_status, SUSPENDED_PAGE)
            return PlainTextResponse(page, status_code=503, headers={"Retry-After": "60"})
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        client = request.client.host if request.client else ""
        forwarded_for = ", ".join(filter(None, [request.headers.get("x-forwarded-for"), client]))
        headers += [("x-forwarded-for", forwarded_for), ("x-forwarded-host", host),
                    ("x-forwarded-proto", request.url.scheme), ("host", host)]
        upstream = self.client.build_request(
            request.method,
            f"http://{LOOPBACK}:{port}{request.url.path}",
            params=request.url.query,
            headers=headers,
            content=_body(request),
        )
        try:
            answer = await self.client.send(upstream, stream=True)
        except httpx.TransportError:
            return PlainTextResponse("The service is not answering.\n", status_code=502)
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers={k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP},
            background=BackgroundTask(answer.aclose),
        )


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        yield chunk
