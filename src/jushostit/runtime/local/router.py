"""The local runtime's router on the serve port: `Host: <slug>.localhost[:port]` reaches that instance.

Requests are streamed both ways, each chunk passed on as it comes, with the usual forwarded headers; the
upstream's answer is read while the request body is still being sent, so its status reaches the client as it
was given (a 501 or a 413 sent before the body was read stays what it is). The upstream's Date and Server
headers are not passed on (the server in front sets the date). The router's own answers are in the API's error shape: a stopped instance answers 503 (`service_suspended`), an
unknown host 404, an instance that does not answer 502. Everything else goes to the API.

The router asks for routes; it does not know where instances are recorded: the app gives it a RouteCache
around a lookup (slug → Route) of its own. The route of a serving instance is kept ROUTE_TTL_SECONDS, so a
busy site costs no database query per request and an observed status change is answered within that time.
The upstream port is kept while the instance's run record is unchanged (one stat per request): a stop or a
restart is seen at once, and the route looked up again. Other answers (unknown, stopped, deleted) are not
kept. Upstream connections are HTTP/1.1, kept alive in one pool for the life of the app (closed at
shutdown), their answers parsed with httptools (uvicorn's parser).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httptools
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jushostit.kit.errors import error_payload
from jushostit.runtime.local.driver import LOOPBACK, LocalDriver
from jushostit.runtime.local.traffic import TrafficMeter

HOST_PATTERN = re.compile(r"^(?P<slug>[a-z0-9][a-z0-9-]{0,62})\.localhost(:\d+)?$")
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailers",
              b"transfer-encoding", b"upgrade", b"host", b"content-length"}
# Not forwarded either: what the router sets itself, and Expect (the server already answered 100-continue).
REQUEST_DROPPED = HOP_BY_HOP | {b"expect", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto"}
# A response body is passed on as it came (chunked framing aside), so its length still holds. The server in front
# (uvicorn) adds its own Date, so the upstream's would be a second one; the upstream's Server names its software
# (and version) to anyone who asks, which is not ours to publish.
RESPONSE_DROPPED = (HOP_BY_HOP - {b"content-length"}) | {b"date", b"server"}
# What an unavailable instance's host answers (503, Retry-After), by its observed status: the error contract's
# code and message.
SUSPENDED = ("service_suspended", "This service is suspended.")
UNAVAILABLE = {
    "provisioning": ("service_starting", "This service is starting."),
    "failed": ("service_unavailable", "This service is unavailable."),
}
SERVING = frozenset({"running", "throttled"})
ROUTE_TTL_SECONDS = 0.5  # how stale a route's status may be (and how often a busy slug is looked up)
MAX_ROUTES = 10_000
RUN_RECORD = "run.json"  # the local driver's record of a running instance, removed when it stops
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 60.0  # between two reads of an answer
KEEPALIVE_SECONDS = 30.0
MAX_IDLE_PER_PORT = 64
READ_SIZE = 65536
WATCH_AFTER_READS = 4  # an answer still streaming after this many reads is watched for the client leaving


@dataclass(frozen=True)
class Route:
    account_id: uuid.UUID
    instance_id: uuid.UUID
    status: str  # the instance's observed status


RouteLookup = Callable[[str], Awaitable[Route | None]]


@dataclass
class _Cached:
    route: Route | None
    fresh_until: float
    port: int | None = None
    run_record: tuple[int, int] | None = None  # (inode, mtime) of the run record the port was read from


class RouteCache:
    """slug → Route. A route to a serving instance is kept `ttl` seconds; any other answer (unknown, stopped,
    starting, failed) is not kept, so a site coming back or going away is seen at its next request. Concurrent
    requests for the same slug share one lookup."""

    def __init__(self, lookup: RouteLookup, *, ttl: float = ROUTE_TTL_SECONDS, max_entries: int = MAX_ROUTES) -> None:
        self.lookup = lookup
        self.ttl = ttl
        self.max_entries = max_entries
        self.lookups = 0
        self._entries: dict[str, _Cached] = {}
        self._pending: dict[str, asyncio.Future[_Cached]] = {}

    async def get(self, slug: str) -> tuple[_Cached, bool]:
        """The slug's route, and whether it came from the cache (rather than a lookup made just now)."""
        entry = self._entries.get(slug)
        if entry is not None and entry.fresh_until > time.monotonic():
            return entry, True
        pending = self._pending.get(slug)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(slug))
            self._pending[slug] = pending
            pending.add_done_callback(lambda _: self._pending.pop(slug, None))
        return await asyncio.shield(pending), False  # a caller that goes away does not cancel the others' lookup

    def forget(self, slug: str) -> None:
        self._entries.pop(slug, None)

    async def _fetch(self, slug: str) -> _Cached:
        self.lookups += 1
        route = await self.lookup(slug)
        if route is None or route.status not in SERVING:
            self._entries.pop(slug, None)
            return _Cached(route, 0.0)  # not kept: an unavailable site's next request looks again
        entry = _Cached(route, time.monotonic() + self.ttl)
        if len(self._entries) >= self.max_entries:
            now = time.monotonic()
            for stale in [s for s, e in self._entries.items() if e.fresh_until <= now]:
                del self._entries[stale]
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries[slug] = entry
        return entry


class Unreachable(Exception):
    """No connection could be made: nothing was sent, the request may go elsewhere."""


class BadGateway(Exception):
    """The upstream failed before answering."""


class _Stale(Exception):
    """A kept-alive connection turned out closed before anything was read (retried on a new one)."""


class _ClientGone(Exception):
    """The client went away while sending its body: nobody is left to answer."""


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0
    used: bool = False

    def usable(self, now: float) -> bool:
        return (now - self.idle_since < KEEPALIVE_SECONDS and not self.reader.at_eof()
                and not self.writer.is_closing())


class _Answer:
    """httptools callbacks for one upstream answer; body chunks are collected between two reads. Interim
    answers (1xx, such as 103 Early Hints) are skipped: the final one follows on the same connection."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False  # read when complete (the parser forgets it once the message is done)
        self._interim = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            self.headers, self._interim = [], True
        else:
            self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        else:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()


class Upstreams:
    """Keep-alive HTTP/1.1 connections to the instances' loopback ports, one pool for the life of the app."""

    def __init__(self, *, max_idle_per_port: int = MAX_IDLE_PER_PORT) -> None:
        self.max_idle_per_port = max_idle_per_port
        self.connections_made = 0
        self._idle: dict[int, list[_Connection]] = {}
        self._closed = False
        self._next_sweep = 0.0

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.writer.close()

    async def forward(self, port: int, head: bytes, body: str | None, receive: Receive, send: Send,
                      head_only: bool) -> None:
        """Send the request (`head`, then the client's body: "length", "chunked" or None) and relay the answer.
        Raises Unreachable (nothing sent) or BadGateway (nothing answered yet); a failure in the middle of an
        answer ends it where it is (the client sees a cut-off response)."""
        connection = self._idle_connection(port)
        if connection is not None:
            try:
                keep = await _exchange(connection, head, body, receive, send, head_only, retry_if_stale=body is None)
            except _Stale:
                connection.writer.close()
                connection = None
            except BaseException:
                connection.writer.close()
                raise
        if connection is None:
            connection = await self._connect(port)
            try:
                keep = await _exchange(connection, head, body, receive, send, head_only, retry_if_stale=False)
            except BaseException:
                connection.writer.close()
                raise
        if keep and not self._closed and len(self._idle.setdefault(port, [])) < self.max_idle_per_port:
            connection.idle_since = time.monotonic()
            self._idle[port].append(connection)
        else:
            connection.writer.close()

    def _idle_connection(self, port: int) -> _Connection | None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        idle = self._idle.get(port)
        while idle:
            connection = idle.pop()
            if connection.usable(now):
                return connection
            connection.writer.close()
        return None

    def _sweep(self, now: float) -> None:
        """Close the idle connections that expired or that their instance closed (a stopped instance's port
        may never be asked for again), so none lingers half-closed."""
        self._next_sweep = now + KEEPALIVE_SECONDS / 3
        for port, idle in list(self._idle.items()):
            kept: list[_Connection] = []
            for connection in idle:
                if connection.usable(now):
                    kept.append(connection)
                else:
                    connection.writer.close()
            if kept:
                self._idle[port] = kept
            else:
                del self._idle[port]

    async def _connect(self, port: int) -> _Connection:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                reader, writer = await asyncio.open_connection(LOOPBACK, port, limit=READ_SIZE)
        except (OSError, TimeoutError) as error:
            raise Unreachable(str(error)) from error
        self.connections_made += 1
        return _Connection(reader, writer)


async def _exchange(connection: _Connection, head: bytes, body: str | None, receive: Receive, send: Send,
                    head_only: bool, *, retry_if_stale: bool) -> bool:
    """One request and its answer on one connection; True if the connection may be used again.

    The client's body is sent while the answer is read: an upstream may answer before reading it all (a 501 for
    a method it does not know, a 413) and close the connection. Read only after sending, its answer would be
    lost when the write fails (asyncio's reader then raises instead of returning what it already holds), and the
    client would get a 502 for the upstream's own status."""
    reader, writer = connection.reader, connection.writer
    answer = _Answer()
    parser = answer.parser
    started = False
    received = False
    client_gone = False
    reads = 0
    relay = asyncio.current_task()
    watcher: asyncio.Task[None] | None = None
    sender: asyncio.Task[None] | None = None

    def on_client_gone() -> None:
        nonlocal client_gone
        client_gone = True
        if relay is not None:
            relay.cancel()

    def read_deadline() -> float | None:
        """No read deadline while the client's body is still being sent (a slow upload is not a silent upstream)."""
        return None if sender is not None and not sender.done() else asyncio.get_running_loop().time() + READ_TIMEOUT_SECONDS

    try:
        async with asyncio.timeout(None) as deadline:

            async def send_body(chunked: bool) -> None:
                try:
                    await _send_body(writer, receive, chunked=chunked)
                except _ClientGone:
                    on_client_gone()
                    return
                except OSError:
                    pass  # the instance stopped reading: it may have answered already (a refusal), read on
                deadline.reschedule(asyncio.get_running_loop().time() + READ_TIMEOUT_SECONDS)

            try:
                writer.write(head)
                if body is not None:
                    sender = asyncio.create_task(send_body(body == "chunked"))
                while True:
                    deadline.reschedule(read_deadline())
                    data = await reader.read(READ_SIZE)
                    reads += 1
                    if data:
                        received = True
                        parser.feed_data(data)
                    elif answer.headers_done and _until_close(answer.headers, parser, head_only):
                        answer.complete = True
                    else:
                        raise ConnectionResetError("the upstream closed the connection")
                    if answer.headers_done and not started:
                        await send({"type": "http.response.start", "status": parser.get_status_code(),
                                    "headers": [h for h in answer.headers if h[0] not in RESPONSE_DROPPED]})
                        started = True
                        if head_only:  # no body follows a HEAD answer, whatever its length says
                            await send({"type": "http.response.body", "body": b"", "more_body": False})
                            return False
                    if started:
                        chunks, answer.chunks = answer.chunks, []
                        last = len(chunks) - 1
                        for i, chunk in enumerate(chunks):
                            await send({"type": "http.response.body", "body": chunk,
                                        "more_body": not (answer.complete and i == last)})
                        if answer.complete:
                            if not chunks:
                                await send({"type": "http.response.body", "body": b"", "more_body": False})
                            # Answered before the whole body was read: what is left of it would be taken for
                            # the next request.
                            body_sent = sender is None or (sender.done() and not client_gone)
                            return answer.keep_alive and data != b"" and body_sent
                        # The client's messages are read by one task at a time: the sender's, then the watcher's.
                        if reads >= WATCH_AFTER_READS and watcher is None and (sender is None or sender.done()):
                            watcher = asyncio.create_task(_until_disconnected(receive, on_client_gone))
            except (OSError, httptools.HttpParserError) as error:
                if retry_if_stale and not received and connection.used:
                    raise _Stale from error
                if not started:
                    raise BadGateway(str(error)) from error
                return False
            finally:
                connection.used = True
    except TimeoutError as error:
        if not started:
            raise BadGateway("the upstream did not answer in time") from error
        return False
    except asyncio.CancelledError:
        if client_gone and relay is not None:
            relay.uncancel()  # our own cancel: the client went away, stop reading for nobody
            return False
        raise
    finally:
        for task in (watcher, sender):
            if task is not None:
                task.cancel()  # not awaited: nothing here may wait (see on_client_gone)


def _until_close(headers: list[tuple[bytes, bytes]], parser: httptools.HttpResponseParser, head_only: bool) -> bool:
    """The answer's body ends when the connection does (no length, not chunked)."""
    status = parser.get_status_code()
    if head_only or status in (204, 304) or status < 200:
        return False
    return all(name not in (b"content-length", b"transfer-encoding") for name, _ in headers)


async def _send_body(writer: asyncio.StreamWriter, receive: Receive, *, chunked: bool) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        if chunk:
            writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await writer.drain()
        if not message.get("more_body", False):
            if chunked:
                writer.write(b"0\r\n\r\n")
            return


async def _until_disconnected(receive: Receive, on_gone: Callable[[], None]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    on_gone()


def _request_head(scope: Scope, host: bytes) -> tuple[bytes, str | None]:
    """The request line and headers for the upstream, and how the client's body is framed."""
    target = scope.get("raw_path") or scope["path"].encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    lines = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (scope["method"].encode(), target, host)]
    body = None
    forwarded_for = b""
    for name, value in scope["headers"]:
        if name not in REQUEST_DROPPED:
            lines.append(b"%s: %s\r\n" % (name, value))
        elif name == b"content-length":
            body = body or "length"
            lines.append(b"content-length: %s\r\n" % value)
        elif name == b"transfer-encoding":
            body = "chunked"
            lines.append(b"transfer-encoding: chunked\r\n")
        elif name == b"x-forwarded-for":
            forwarded_for = value
    client = scope.get("client")
    address = client[0].encode() if client else b""
    lines.append(b"x-forwarded-for: %s\r\nx-forwarded-host: %s\r\nx-forwarded-proto: %s\r\n\r\n" % (
        b", ".join(v for v in (forwarded_for, address) if v), host, scope.get("scheme", "http").encode()))
    if body == "chunked":  # both framings given: chunked wins (RFC 9112 §6.3), the length is not forwarded
        lines = [line for line in lines if not line.startswith(b"content-length:")]
    return b"".join(lines), body


class LocalRouter:
    def __init__(self, app: ASGIApp, *, driver: LocalDriver, routes: RouteCache, upstreams: Upstreams) -> None:
        self.app = app
        self.driver = driver
        self.routes = routes
        self.upstreams = upstreams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = b""
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
                break
        match = HOST_PATTERN.match(host.decode("latin-1").lower())
        if match is None:
            await self.app(scope, receive, send)
            return
        await self._route(scope, receive, send, match.group("slug"), match.group(0).encode())

    def _port(self, entry: _Cached) -> int | None:
        """The instance's port, read again only when its run record changed (it is removed when it stops)."""
        route = entry.route
        assert route is not None
        try:
            info = os.stat(self.driver.instance_dir(route.account_id, route.instance_id) / RUN_RECORD)
        except OSError:
            return None
        record = (info.st_ino, info.st_mtime_ns)
        if entry.run_record != record:
            entry.port, entry.run_record = self.driver.port_of(route.account_id, route.instance_id), record
        return entry.port

    async def _route(self, scope: Scope, receive: Receive, send: Send, slug: str, host: bytes) -> None:
        head, body = _request_head(scope, host)
        entry, cached = await self.routes.get(slug)
        for _ in range(2):
            route = entry.route
            if route is None:
                await _error(404, "not_found", "No such service.")(scope, receive, send)
                return
            port = self._port(entry) if route.status in SERVING else None
            if port is None:
                if route.status in SERVING:  # but the runtime runs no process for it: not kept
                    self.routes.forget(slug)
                    if cached:  # the route may be stale (stopped, deleted since): look again, once
                        entry, cached = await self.routes.get(slug)
                        continue
                code, message = UNAVAILABLE.get(route.status, SUSPENDED)
                await _error(503, code, message, {"Retry-After": "60"})(scope, receive, send)
                return
            try:
                counted_receive, counted_send = _counted(self.driver.traffic, route.instance_id, head, receive, send)
                await self.upstreams.forward(port, head, body, counted_receive, counted_send,
                                             head_only=scope["method"] == "HEAD")
                return
            except Unreachable:
                self.routes.forget(slug)  # nothing was sent: the request may go where the instance is now
                if cached:
                    entry, cached = await self.routes.get(slug)
                    continue
            except BadGateway:
                pass
            break
        await _error(502, "bad_gateway", "The service is not answering.")(scope, receive, send)


def _counted(traffic: TrafficMeter, instance_id: uuid.UUID, head: bytes, receive: Receive,
             send: Send) -> tuple[Receive, Send]:
    """receive and send that count the bytes relayed for the instance (metering's network usage): the request's
    head and body received, the answer's body sent."""
    traffic.count(instance_id, received=len(head))

    async def counted_receive() -> Message:
        message = await receive()
        traffic.count(instance_id, received=len(message.get("body", b"")))
        return message

    async def counted_send(message: Message) -> None:
        if message["type"] == "http.response.body":
            traffic.count(instance_id, sent=len(message.get("body", b"")))
        await send(message)

    return counted_receive, counted_send


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The router's own answers are errors in the API's contract shape."""
    return JSONResponse(error_payload(code, message), status_code=status, headers=headers)

