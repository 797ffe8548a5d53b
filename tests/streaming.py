"""Calling endless responses (Server-Sent Events) in-process.

httpx's ASGITransport returns only once the app has finished the whole response, which an event stream never
does. `first_response` drives the ASGI app directly, takes the status, headers and first chunk, then hangs up
the way a browser closing the tab would, and waits for the app to finish.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any
from urllib.parse import urlencode

import httpx

STREAM_MEDIA_TYPE = "text/event-stream"
GIVE_UP_SECONDS = 10.0


def is_streaming(operation_spec: dict[str, Any]) -> bool:
    """Whether an OpenAPI operation documents an event stream."""
    return any(STREAM_MEDIA_TYPE in (r.get("content") or {}) for r in operation_spec.get("responses", {}).values())


async def first_response(
    app: Any,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    client: tuple[str, int] = ("203.0.113.7", 50000),
) -> httpx.Response:
    query = urlencode(params or {}, doseq=True).encode()
    raw_headers = [(b"host", b"testserver")] + [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": raw_headers,
        "client": client,
        "server": ("testserver", 80),
        "state": {},
    }
    hung_up = asyncio.Event()
    first_chunk = asyncio.Event()
    request_sent = False
    start: dict[str, Any] = {}
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await hung_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body" and not first_chunk.is_set():
            body.append(message.get("body", b""))
            if body[-1] or not message.get("more_body", False):
                first_chunk.set()

    started = time.perf_counter()
    task = asyncio.create_task(app(scope, receive, send))
    waiter = asyncio.create_task(first_chunk.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, timeout=GIVE_UP_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        assert done, f"{method} {path} sent no response within {GIVE_UP_SECONDS}s"
    finally:
        waiter.cancel()
        hung_up.set()
    await asyncio.wait_for(task, timeout=GIVE_UP_SECONDS)  # the app notices the hang-up and ends the stream
    assert start, f"{method} {path} finished without a response"
    response = httpx.Response(
        start["status"],
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])],
        content=b"".join(body),
        request=httpx.Request(method, f"http://testserver{path}", headers=headers, params=params),
    )
    response.elapsed = datetime.timedelta(seconds=time.perf_counter() - started)
    return response
