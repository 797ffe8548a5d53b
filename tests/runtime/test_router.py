"""The local router against real instance processes (`python -m http.server`, in HTTP/1.1 where keep-alive is
the point), through its ASGI interface. Routes come from the lookup the app injects; here a plain function
over a table the test changes, as the reconciler changes observed statuses.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from starlette.responses import PlainTextResponse

from jushostit.runtime.local import router as router_module
from jushostit.runtime.local.driver import LocalDriver
from jushostit.runtime.local.router import KEEPALIVE_SECONDS, LocalRouter, Route, RouteCache, Upstreams
from jushostit.runtime.protocol import AccountState
from tests.live import eventually
from tests.runtime.test_local_driver import ACCOUNT, TEMPLATES, converged, desired

SLUG = "my-site-abc123"
HOST = f"{SLUG}.localhost:8000"


def keep_alive_site() -> Any:
    """static-site, its server speaking HTTP/1.1 (persistent connections) instead of HTTP/1.0."""
    template = TEMPLATES["static-site"]
    assert template.process is not None
    command = [*template.process.command[:-1], "--protocol", "HTTP/1.1", template.process.command[-1]]
    return template.model_copy(update={"process": template.process.model_copy(update={"command": command})})


@dataclass
class Site:
    driver: LocalDriver
    instance_id: uuid.UUID
    routes: dict[str, Route]
    cache: RouteCache
    upstreams: Upstreams
    client: httpx.AsyncClient

    async def get(self, path: str = "/", **kwargs: Any) -> httpx.Response:
        return await self.client.get(path, headers={"Host": HOST}, **kwargs)

    def set_status(self, status: str) -> None:
        self.routes[SLUG] = Route(ACCOUNT, self.instance_id, status)

    def process(self) -> psutil.Process:
        record = self.driver._read_run(self.driver.instance_dir(ACCOUNT, self.instance_id))
        assert record is not None
        return psutil.Process(record.pid)


async def api(scope: Any, receive: Any, send: Any) -> None:
    await PlainTextResponse("the API\n")(scope, receive, send)


async def make_site(tmp_path: Path, ttl: float, template: Any = None) -> AsyncIterator[Site]:
    driver = LocalDriver(tmp_path / "instances")
    instance_id = uuid.uuid4()
    instance = desired(instance_id)
    instance = type(instance)(**{**instance.__dict__, "template": template or keep_alive_site()})
    _, observed = await converged(driver, AccountState(ACCOUNT, (instance,)))
    assert observed.instances[instance_id].status == "running"
    routes: dict[str, Route] = {SLUG: Route(ACCOUNT, instance_id, "running")}

    async def lookup(slug: str) -> Route | None:
        await asyncio.sleep(0)  # a lookup is a database round trip: other requests run meanwhile
        return routes.get(slug)

    cache = RouteCache(lookup, ttl=ttl)
    upstreams = Upstreams()
    router = LocalRouter(api, driver=driver, routes=cache, upstreams=upstreams)
    transport = httpx.ASGITransport(app=router, client=("203.0.113.9", 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Site(driver, instance_id, routes, cache, upstreams, client)
    finally:
        await upstreams.aclose()
        await driver.destroy(ACCOUNT)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async for made in make_site(tmp_path, ttl=0.5):
        yield made


@pytest.fixture
async def slow_site(tmp_path: Path) -> AsyncIterator[Site]:
    """Routes cached for a minute: what changes sooner is seen through the run record, not the route."""
    async for made in make_site(tmp_path, ttl=60.0):
        yield made


async def test_the_router_serves_the_instance_and_sends_other_hosts_to_the_api(site: Site) -> None:
    page = await site.get("/")
    assert page.status_code == 200 and "<h1>my-site</h1>" in page.text
    assert page.headers["content-length"] == str(len(page.content))

    missing = await site.get("/nothing-here.txt", params={"q": "1"})
    assert missing.status_code == 404  # the instance's own 404, relayed
    head = await site.client.head("/", headers={"Host": HOST})
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
    assert (await site.get("/")).text == page.text  # the connection HEAD left unfinished was not reused

    assert (await site.client.get("/", headers={"Host": "other-abc123.localhost:8000"})).status_code == 404
    assert (await site.client.get("/healthz")).text == "the API\n"


async def test_upstream_connections_are_kept_alive_and_reused(site: Site) -> None:
    for _ in range(20):
        assert (await site.get("/")).status_code == 200
    assert site.upstreams.connections_made == 1

    await asyncio.gather(*(site.get("/") for _ in range(10)))
    assert site.upstreams.connections_made <= 10  # concurrent requests need their own, kept for the next
    made = site.upstreams.connections_made
    await asyncio.gather(*(site.get("/") for _ in range(made)))
    assert site.upstreams.connections_made == made

    port = site.driver.port_of(ACCOUNT, site.instance_id)
    established = [c for c in site.process().net_connections() if c.laddr.port == port
                   and c.status == psutil.CONN_ESTABLISHED]
    assert len(established) == made  # the instance sees only the pooled connections, still open


async def test_a_status_change_is_answered_within_the_route_ttl_and_lookups_are_cached(site: Site) -> None:
    before = site.cache.lookups
    started = time.monotonic()
    for _ in range(30):
        assert (await site.get("/")).status_code == 200
    windows = (time.monotonic() - started) / site.cache.ttl
    assert site.cache.lookups - before <= windows + 1  # one lookup per TTL, not one per request

    site.set_status("stopped")  # the reconciler observed it stopped (the process still answers, for the test)
    changed = time.monotonic()

    async def suspended() -> httpx.Response | None:
        response = await site.get("/")
        return response if response.status_code == 503 else None

    answer = await eventually(suspended, "the suspended page", timeout=site.cache.ttl + 5)
    assert "suspended" in answer.text and answer.headers["retry-after"] == "60"
    assert time.monotonic() - changed <= site.cache.ttl + 1.0  # within about the TTL, whatever the machine

    site.set_status("running")
    assert (await site.get("/")).status_code == 200  # back at once: a stopped site's route was not kept


async def test_concurrent_requests_on_a_cold_route_share_one_lookup(site: Site) -> None:
    before = site.cache.lookups
    answers = await asyncio.gather(*(site.get("/") for _ in range(20)))
    assert all(a.status_code == 200 for a in answers)
    assert site.cache.lookups - before == 1


async def test_a_stopped_process_answers_at_once_though_its_route_is_cached(slow_site: Site) -> None:
    assert (await slow_site.get("/")).status_code == 200
    lookups = slow_site.cache.lookups

    instance = desired(slow_site.instance_id, run=False)
    await slow_site.driver.apply(AccountState(ACCOUNT, (instance,)))  # stopped: its run record is gone
    stopped = await slow_site.get("/")
    assert stopped.status_code == 503 and "suspended" in stopped.text
    assert slow_site.cache.lookups == lookups + 1  # the runtime disagreed with the cached route: looked again

    slow_site.set_status("stopped")  # what the reconciler then records
    assert (await slow_site.get("/")).status_code == 503
    del slow_site.routes[SLUG]  # deleted
    assert (await slow_site.get("/")).status_code == 404  # an unavailable site's route is not kept


async def test_a_restarted_process_on_a_new_port_is_found_at_once(slow_site: Site) -> None:
    assert (await slow_site.get("/")).status_code == 200
    port = slow_site.driver.port_of(ACCOUNT, slow_site.instance_id)

    await slow_site.driver.restart(slow_site.instance_id)
    instance = desired(slow_site.instance_id)
    instance = type(instance)(**{**instance.__dict__, "template": keep_alive_site()})
    await converged(slow_site.driver, AccountState(ACCOUNT, (instance,)))
    assert slow_site.driver.port_of(ACCOUNT, slow_site.instance_id) not in (None, port)

    page = await slow_site.get("/")
    assert page.status_code == 200 and "<h1>my-site</h1>" in page.text


async def test_a_large_file_streams_through_whole(site: Site) -> None:
    data = site.driver.instance_dir(ACCOUNT, site.instance_id) / "data"
    blob = bytes(range(256)) * 8192  # 2 MiB: many reads, so the relay also watches for the client leaving
    (data / "big.bin").write_bytes(blob)

    big = await site.get("/big.bin")

    assert big.status_code == 200 and big.content == blob
    assert big.headers["content-length"] == str(len(blob))
    assert (await site.get("/")).status_code == 200


ECHO_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.answer(b"")

    def do_POST(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                body += self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    break
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.answer(body)

    def answer(self, body):
        self.send_response(200)
        for name in ("Host", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Transfer-Encoding",
                     "Connection", "X-Custom", "Content-Length"):
            self.send_header("Seen-" + name, self.headers.get(name, "-"))
        self.send_header("Seen-Target", self.path)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
"""


@pytest.fixture
async def echo(tmp_path: Path) -> AsyncIterator[Site]:
    """An instance whose process answers with what it received (a real HTTP/1.1 server reading bodies)."""
    template = TEMPLATES["static-site"]
    assert template.process is not None
    process = template.process.model_copy(update={"command": ["{python}", "echo.py", "{port}"],
                                                  "seed_files": {"echo.py": ECHO_SERVER}})
    async for made in make_site(tmp_path, ttl=0.5, template=template.model_copy(update={"process": process})):
        yield made


async def test_bodies_and_forwarded_headers_reach_the_instance(echo: Site) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"first ", b"second ", b"third"):
            yield part

    sized = await echo.client.post("/form?a=1&b=%20", headers={"Host": HOST, "X-Custom": "kept",
                                                               "X-Forwarded-For": "198.51.100.1"},
                                   content=b"name=value")
    streamed = await echo.client.post("/upload", headers={"Host": HOST}, content=chunks())

    assert sized.status_code == 200 and sized.content == b"name=value"
    assert sized.headers["seen-target"] == "/form?a=1&b=%20"
    assert sized.headers["seen-host"] == sized.headers["seen-x-forwarded-host"] == HOST
    assert sized.headers["seen-x-forwarded-for"] == "198.51.100.1, 203.0.113.9"
    assert sized.headers["seen-x-forwarded-proto"] == "http" and sized.headers["seen-x-custom"] == "kept"
    assert streamed.status_code == 200 and streamed.content == b"first second third"
    assert streamed.headers["seen-transfer-encoding"] == "chunked"
    assert echo.upstreams.connections_made == 1  # both on one kept-alive connection


async def test_the_router_passes_an_upstream_501_through(tmp_path: Path) -> None:
    # http.server answers 501 to a POST without reading its body and closes the connection: with a large body
    # the write fails after the answer arrived, which must still reach the client as the upstream's own status.
    for protocol, template in (("1.0", TEMPLATES["static-site"]), ("1.1", keep_alive_site())):  # as shipped, kept alive
        async for made in make_site(tmp_path / protocol, ttl=0.5, template=template):
            for size in (0, 5_000_000):
                refused = await made.client.post("/", headers={"Host": HOST}, content=b"x" * size)
                assert refused.status_code == 501, (size, refused.text)
                assert "Unsupported method" in refused.text
            assert (await made.get("/")).status_code == 200  # nothing of the unread body is taken for a request


@pytest.fixture
async def fronted(site: Site) -> AsyncIterator[str]:
    """The router behind a real uvicorn on loopback, configured as `serve` runs it; yields its base URL."""
    import uvicorn

    router = LocalRouter(api, driver=site.driver, routes=site.cache, upstreams=site.upstreams)
    server = uvicorn.Server(uvicorn.Config(router, host="127.0.0.1", port=0, log_config=None, access_log=False,
                                           lifespan="off", server_header=False))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), "uvicorn to start")
        assert not task.done(), task
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


# mutmut wraps every method in a trampoline; uvicorn cannot run the router's wrapped __call__ (TypeError), so
# under a mutation run (MUTANT_UNDER_TEST set) this one test cannot start. Everywhere else it runs.
@pytest.mark.skipif("MUTANT_UNDER_TEST" in os.environ, reason="uvicorn cannot serve mutmut's trampolined router")
async def test_the_router_sends_one_date_header_and_not_the_upstreams_server_header(fronted: str) -> None:
    async with httpx.AsyncClient(base_url=fronted) as client:
        for response in (await client.get("/", headers={"Host": HOST}),
                         await client.post("/", headers={"Host": HOST}, content=b"x")):
            assert response.status_code in (200, 501)
            assert len(response.headers.get_list("date")) == 1, response.headers
            assert "server" not in response.headers, response.headers  # SimpleHTTP/0.6 Python/3.x stays inside
            assert "SimpleHTTP" not in str(response.headers.raw)


async def test_concurrent_requests_to_a_stopped_process_all_answer_suspended(site: Site) -> None:
    assert (await site.get("/")).status_code == 200  # its route is cached now
    await site.driver.apply(AccountState(ACCOUNT, (desired(site.instance_id, run=False),)))  # the process stops

    # Each of them finds no process behind the route and drops it: the second finds it already dropped.
    answers = await asyncio.gather(*(site.get("/") for _ in range(5)))

    assert [a.status_code for a in answers] == [503] * 5
    assert all("suspended" in a.text for a in answers)


RAW_SERVER = """
import socket
import sys
import threading
import time

ANSWERS = {  # then the connection closes: "/" was answered as kept alive, its keep-alive timeout is nil
    "/": b"HTTP/1.1 200 OK\\r\\nContent-Length: 3\\r\\n\\r\\nok\\n",
    "/short-length": b"HTTP/1.1 200 OK\\r\\nContent-Length: 100\\r\\n\\r\\nonly these",
    "/empty": b"HTTP/1.1 204 No Content\\r\\nX-Seen: yes\\r\\n\\r\\n",
    "/closing": b"HTTP/1.1 200 OK\\r\\nConnection: close\\r\\nContent-Length: 3\\r\\n\\r\\nok\\n",
    "/short-chunked": b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n5\\r\\nhello\\r\\n",
}


def handle(conn):
    with conn:
        head = b""
        while b"\\r\\n\\r\\n" not in head:
            more = conn.recv(65536)
            if not more:
                return
            head += more
        head, _, body = head.partition(b"\\r\\n\\r\\n")
        if head.startswith(b"POST /early "):  # answered before the body is read, the connection kept open
            conn.sendall(b"HTTP/1.1 413 Content Too Large\\r\\nContent-Length: 0\\r\\n\\r\\n")
            while conn.recv(65536):
                pass
            return
        for line in head.lower().split(b"\\r\\n"):
            if line.startswith(b"content-length:"):
                while len(body) < int(line.split(b":")[1]):
                    more = conn.recv(65536)
                    if not more:
                        return
                    body += more
        path = head.split(b" ")[1].decode()
        if path == "/no-answer":  # closed without a word
            return
        if path == "/stop-listening":  # alive, but refusing connections from now on
            conn.sendall(b"HTTP/1.1 200 OK\\r\\nConnection: close\\r\\nContent-Length: 8\\r\\n\\r\\nstopped\\n")
            server.shutdown(socket.SHUT_RDWR)
            return
        if path.startswith("/until-close/"):  # no length, not chunked: the body ends with the connection
            status = path.rsplit("/", 1)[1]
            conn.sendall(b"HTTP/1.1 " + status.encode() + b" Whatever\\r\\nContent-Type: text/plain\\r\\n\\r\\n")
            conn.sendall(b"the whole body\\n")
        elif path == "/silent":  # the request read, never a word back, the connection kept open
            while conn.recv(65536):
                pass
        elif path in ("/no-content-kept", "/not-modified-kept", "/head-kept"):  # no body, the connection kept
            status = {"/no-content-kept": b"204 No Content", "/not-modified-kept": b"304 Not Modified",
                      "/head-kept": b"200 OK"}[path]
            conn.sendall(b"HTTP/1.1 " + status + b"\\r\\nX-Seen: yes\\r\\n\\r\\n")
            conn.recv(65536)
        elif path == "/early-hints":  # an interim answer first, then the final one, its body in two parts
            conn.sendall(b"HTTP/1.1 103 Early Hints\\r\\nLink: </style.css>; rel=preload\\r\\n\\r\\n")
            time.sleep(0.2)
            conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\nfin")
            time.sleep(0.2)
            conn.sendall(b"al")
        elif path == "/once":  # answered as kept alive; the next request on it finds it closing (timed out)
            conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\nonce\\n")
            conn.recv(65536)
        elif path == "/bad-chunk":  # a broken chunk mid-answer, the connection left open
            conn.sendall(b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n5\\r\\nhello\\r\\n")
            time.sleep(0.2)
            conn.sendall(b"ZZZ\\r\\n")
            conn.recv(65536)
        elif path == "/twice":  # answered as kept alive; the next request on it gets half an answer
            conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\nwhole")
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 10\\r\\n\\r\\nhalf")
        elif path == "/stream":  # an endless answer, until the reader goes away
            conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n")
            try:
                while True:
                    conn.sendall(b"tick\\n" * 1000)
                    time.sleep(0.01)
            except OSError:
                pass
        else:
            conn.sendall(ANSWERS[path])


server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
try:
    while True:
        conn = server.accept()[0]
        threading.Thread(target=handle, args=(conn,), daemon=True).start()
except OSError:
    server.close()
    threading.Event().wait()
"""


def raw_site() -> Any:
    """An instance whose process writes canned answers byte for byte, then closes the connection."""
    template = TEMPLATES["static-site"]
    assert template.process is not None
    process = template.process.model_copy(update={"command": ["{python}", "raw.py", "{port}"],
                                                  "seed_files": {"raw.py": RAW_SERVER}})
    return template.model_copy(update={"process": process})


@pytest.fixture
async def raw(tmp_path: Path) -> AsyncIterator[Site]:
    async for made in make_site(tmp_path, ttl=0.5, template=raw_site()):
        yield made


@pytest.fixture
async def slow_raw(tmp_path: Path) -> AsyncIterator[Site]:
    """Routes cached for a minute."""
    async for made in make_site(tmp_path, ttl=60.0, template=raw_site()):
        yield made


def router_of(site: Site) -> LocalRouter:
    return LocalRouter(api, driver=site.driver, routes=site.cache, upstreams=site.upstreams)


def scope_for(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "http_version": "1.1", "method": method, "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": b"", "client": ("203.0.113.9", 50000),
            "headers": [(b"host", HOST.encode()), *(headers or [])]}


async def relayed(site: Site, path: str) -> list[dict[str, Any]]:
    """The ASGI messages the router sends for a GET of `path` (the client stays until the answer ends)."""
    return await call(site, scope_for("GET", path))


def ended(sent: list[dict[str, Any]]) -> bool:
    """Whether the response was ended as complete (rather than cut off, which the server in front shows as such)."""
    return bool(sent) and sent[-1]["type"] == "http.response.body" and not sent[-1].get("more_body", False)


def body_of(sent: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def test_an_answer_without_length_or_chunking_is_complete_when_the_upstream_closes(raw: Site) -> None:
    # RFC 9112 §6.3: only 1xx, 204 and 304 answers have no body; any other status reads until the close.
    for status in (200, 205, 305):
        sent = await relayed(raw, f"/until-close/{status}")
        assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == status
        assert body_of(sent) == b"the whole body\n" and ended(sent), (status, sent)


async def test_an_answer_without_a_body_by_its_status_or_method_ends_at_once_on_a_connection_kept_open(
    raw: Site,
) -> None:
    # RFC 9112 §6.3: a 204, a 304 and the answer to a HEAD have no body, whatever their headers say; the instance
    # keeps the connection open, so reading until it closes would never end.
    for path, status in (("/no-content-kept", 204), ("/not-modified-kept", 304)):
        sent = await asyncio.wait_for(relayed(raw, path), timeout=10)
        assert sent[0]["status"] == status and body_of(sent) == b"" and ended(sent), (path, sent)
    sent = await asyncio.wait_for(call(raw, scope_for("HEAD", "/head-kept")), timeout=10)
    assert sent[0]["status"] == 200 and body_of(sent) == b"" and ended(sent), sent


async def test_an_answer_cut_short_of_its_length_or_last_chunk_is_not_ended_as_complete(raw: Site) -> None:
    for path, received in (("/short-length", b"only these"), ("/short-chunked", b"hello")):
        sent = await relayed(raw, path)
        assert sent[0]["status"] == 200 and body_of(sent) == received
        assert not ended(sent), (path, sent)  # the client sees a cut-off answer, not a shorter one


def upstream_connections(site: Site) -> int:
    """Open connections the instance's process holds on its port."""
    port = site.driver.port_of(ACCOUNT, site.instance_id)
    return sum(1 for c in site.process().net_connections()
               if c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


async def finished(call: Any, what: str) -> None:
    """Run the router's call to its end, which must come within a few seconds."""
    task = asyncio.create_task(call)
    try:
        await eventually(task.done, what, timeout=10)
    finally:
        task.cancel()
    task.result()


async def leave_mid_body(site: Site, framing: tuple[bytes, bytes]) -> list[dict[str, Any]]:
    """POST ten bytes of a longer body, then disconnect; what the router sent back."""
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"x" * 10, "more_body": True}
        await asyncio.sleep(0)  # as a server's receive does, waiting for the client
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await finished(router_of(site)(scope_for("POST", "/upload", [framing]), receive, send),
                   f"the router to let go of a client that left ({framing})")
    return sent


async def test_a_client_that_disconnects_mid_body_closes_the_upstream_connection(echo: Site) -> None:
    for framing in ((b"content-length", b"1000"), (b"transfer-encoding", b"chunked")):
        sent = await leave_mid_body(echo, framing)
        # The instance never gets the partial body as a whole request: nothing is answered, nothing is kept.
        assert sent == [], (framing, sent)
        await eventually(lambda: upstream_connections(echo) == 0, f"the upstream connection to close ({framing})")


async def post_messages(site: Site, framing: tuple[bytes, bytes], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """POST a body as the given ASGI messages (then the client sends nothing more); what the router sent back."""
    sent: list[dict[str, Any]] = []
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        return await asyncio.get_running_loop().create_future()  # nothing more comes from this client

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await finished(router_of(site)(scope_for("POST", "/upload", [framing]), receive, send),
                   f"the answer to a body sent as {messages} ({framing})")
    assert not queue  # the whole body was read
    return sent


async def test_a_request_message_without_body_adds_nothing_and_without_more_body_ends_the_body(echo: Site) -> None:
    messages = [{"type": "http.request", "more_body": True},  # ASGI: "body" may be left out, meaning b""
                {"type": "http.request", "body": b"da", "more_body": True},
                {"type": "http.request", "body": b"ta"}]  # and "more_body", meaning False: the last part
    for framing in ((b"content-length", b"4"), (b"transfer-encoding", b"chunked")):
        sent = await post_messages(echo, framing, messages)
        assert sent[0]["status"] == 200 and body_of(sent) == b"data" and ended(sent), (framing, sent)


async def test_a_client_that_leaves_during_a_long_answer_closes_the_upstream_connection(raw: Site) -> None:
    sent: list[dict[str, Any]] = []
    asked = False
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        await asyncio.sleep(0)  # as a server's receive does
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if len(body_of(sent)) >= 100_000:
            gone.set()  # the client leaves halfway through an endless answer

    await finished(router_of(raw)(scope_for("GET", "/stream"), receive, send),
                   "the router to stop relaying to a client that left")
    assert sent[0]["status"] == 200 and len(body_of(sent)) >= 100_000 and not ended(sent)
    await eventually(lambda: upstream_connections(raw) == 0, "the upstream connection to close")


async def test_the_routers_own_answers_are_in_the_api_error_shape(raw: Site) -> None:
    def error(response: httpx.Response) -> tuple[int, str, str]:
        return response.status_code, response.json()["error"]["code"], response.json()["error"]["message"]

    unknown = await raw.client.get("/", headers={"Host": "other-abc123.localhost:8000"})
    assert error(unknown) == (404, "not_found", "No such service.")
    for status, code, message in (("stopped", "service_suspended", "This service is suspended."),
                                  ("provisioning", "service_starting", "This service is starting."),
                                  ("failed", "service_unavailable", "This service is unavailable.")):
        raw.set_status(status)
        unavailable = await raw.get("/")
        assert error(unavailable) == (503, code, message) and unavailable.headers["retry-after"] == "60"
    raw.set_status("running")
    assert error(await raw.get("/no-answer")) == (502, "bad_gateway", "The service is not answering.")


async def test_a_kept_alive_connection_the_instance_closed_is_not_used_for_a_request_with_a_body(raw: Site) -> None:
    assert (await raw.get("/")).text == "ok\n"  # answered as kept alive, then closed by the instance
    port = raw.driver.port_of(ACCOUNT, raw.instance_id)
    polls: list[bool] = []

    def closed_by_the_instance() -> bool:
        """The router's end of it half-closed at two polls in a row: its event loop ran in between, saw the end."""
        polls.append(any(c.status == psutil.CONN_CLOSE_WAIT and c.raddr and c.raddr.port == port
                         for c in psutil.Process().net_connections()))
        return polls[-2:] == [True, True]

    await eventually(closed_by_the_instance, "the instance to close the kept-alive connection")
    posted = await raw.client.post("/", headers={"Host": HOST}, content=b"a body")  # not retried elsewhere
    assert posted.status_code == 200 and posted.text == "ok\n"
    assert raw.upstreams.connections_made == 2


async def test_a_shut_down_pool_closes_its_connections_and_keeps_none_after(site: Site) -> None:
    assert (await site.get("/")).status_code == 200
    assert upstream_connections(site) == 1  # kept alive

    await site.upstreams.aclose()  # the app shuts down: requests still in flight get their answer

    await eventually(lambda: upstream_connections(site) == 0, "the pooled connection to close")
    assert (await site.get("/")).status_code == 200
    await eventually(lambda: upstream_connections(site) == 0, "the connection used after shutdown to close",
                     timeout=5)


async def test_the_route_cache_holds_at_most_max_entries_dropping_the_oldest() -> None:
    async def lookup(slug: str) -> Route:
        return Route(ACCOUNT, uuid.uuid5(uuid.NAMESPACE_DNS, slug), "running")

    cache = RouteCache(lookup, ttl=60.0, max_entries=2)
    assert cache.lookups == 0
    for slug in ("a", "b", "c"):
        entry, cached = await cache.get(slug)
        assert not cached and entry.route == await lookup(slug)
    assert cache.lookups == 3

    assert [(await cache.get(slug))[1] for slug in ("b", "c")] == [True, True]
    assert (await cache.get("a"))[1] is False  # the oldest was dropped to make room for the third
    assert cache.lookups == 4


async def test_an_interim_answer_is_skipped_and_the_final_one_relayed_whole(raw: Site) -> None:
    sent = await relayed(raw, "/early-hints")
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert all(name != b"link" for name, _ in sent[0]["headers"])  # the 103's own headers stay with it
    assert body_of(sent) == b"final" and ended(sent), sent


async def test_a_kept_alive_connection_found_closed_is_retried_for_a_request_without_a_body(raw: Site) -> None:
    for _ in range(2):
        assert (await raw.get("/once")).text == "once\n"
    assert raw.upstreams.connections_made == 2  # the second request found the first connection closing

    # A request with a body is not sent twice (the instance may have acted on it): the router answers for it.
    posted = await raw.client.post("/once", headers={"Host": HOST}, content=b"a body")
    assert posted.status_code == 502 and raw.upstreams.connections_made == 2


async def call(site: Site, scope: dict[str, Any], messages: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The ASGI messages the router sends for `scope`, the request body given as `messages`."""
    sent: list[dict[str, Any]] = []
    queue = list(messages or [{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        return await asyncio.get_running_loop().create_future()  # nothing more comes from this client

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await finished(router_of(site)(scope, receive, send), f"the answer to {scope}")
    return sent


def seen(sent: list[dict[str, Any]]) -> dict[str, str]:
    """What the echo instance saw of the request, from its answer's headers."""
    assert sent[0]["status"] == 200, sent
    return {name.decode()[5:]: value.decode() for name, value in sent[0]["headers"] if name.startswith(b"seen-")}


async def test_the_instance_gets_the_target_as_sent_and_the_clients_scheme_and_address(echo: Site) -> None:
    encoded = {**scope_for("GET", "/a b"), "raw_path": b"/a%20b", "query_string": b"q=%2F"}
    assert seen(await call(echo, encoded))["target"] == "/a%20b?q=%2F"  # not decoded on the way
    unencoded = {**scope_for("GET", "/plain"), "raw_path": None}  # ASGI: raw_path may be missing
    assert seen(await call(echo, unencoded))["target"] == "/plain"

    https = {**scope_for("GET", "/"), "scheme": "https", "client": ("192.0.2.1", 1234)}
    forwarded = seen(await call(echo, https))
    assert (forwarded["x-forwarded-proto"], forwarded["x-forwarded-for"]) == ("https", "192.0.2.1")
    # ASGI: without a scheme it is http; without a client (a Unix socket) only the chain the client sent is passed on
    bare = {k: v for k, v in scope_for("GET", "/", [(b"x-forwarded-for", b"198.51.100.1")]).items()
            if k not in ("scheme", "client")}
    forwarded = seen(await call(echo, bare))
    assert (forwarded["x-forwarded-proto"], forwarded["x-forwarded-for"]) == ("http", "198.51.100.1")


async def test_a_body_given_both_a_length_and_chunked_is_forwarded_chunked_only(echo: Site) -> None:
    both = scope_for("POST", "/", [(b"content-length", b"4"), (b"transfer-encoding", b"chunked")])
    sent = await call(echo, both, [{"type": "http.request", "body": b"data", "more_body": False}])
    assert (seen(sent)["transfer-encoding"], seen(sent)["content-length"]) == ("chunked", "-")  # RFC 9112 §6.3
    assert body_of(sent) == b"data"


async def test_other_scopes_and_hosts_go_to_the_app_as_they_came(tmp_path: Path) -> None:
    calls: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append((scope, receive, send))

    async def lookup(slug: str) -> Route | None:
        raise AssertionError(f"no route is looked up for {slug}")

    router = LocalRouter(app, driver=LocalDriver(tmp_path), routes=RouteCache(lookup), upstreams=Upstreams())

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError(message)

    scopes = [{"type": "lifespan"}, {**scope_for("GET", "/"), "type": "websocket"},
              {**scope_for("GET", "/healthz"), "headers": [(b"host", b"testserver")]},
              {**scope_for("GET", "/healthz"), "headers": []}]  # no Host at all (HTTP/1.0)
    for scope in scopes:
        await router(scope, receive, send)
    assert calls == [(scope, receive, send) for scope in scopes]


def router_connections(site: Site) -> list[Any]:
    """This process's connections to the instance's port, whatever their state (a half-closed one counts)."""
    port = site.driver.port_of(ACCOUNT, site.instance_id)
    return [c for c in psutil.Process().net_connections() if c.raddr and c.raddr.port == port]


async def test_an_answer_that_ends_or_breaks_its_connection_leaves_no_connection_behind(raw: Site) -> None:
    for path, body in (("/closing", b"ok\n"), ("/until-close/200", b"the whole body\n"), ("/bad-chunk", b"hello")):
        sent = await relayed(raw, path)
        assert sent[0]["status"] == 200 and body_of(sent) == body
        await eventually(lambda: not router_connections(raw), f"the connection of {path} to be closed", timeout=5)


async def test_a_reused_connection_whose_answer_breaks_off_is_not_retried(raw: Site) -> None:
    assert body_of(await relayed(raw, "/twice")) == b"whole"
    sent = await relayed(raw, "/twice")  # on the kept-alive connection: half an answer, then the close

    assert [m["type"] for m in sent].count("http.response.start") == 1  # answered once, cut off
    assert body_of(sent) == b"half" and not ended(sent)
    assert raw.upstreams.connections_made == 1


async def test_an_instance_that_refuses_connections_is_looked_up_again_once(slow_raw: Site) -> None:
    replacement = uuid.uuid4()  # another instance, running beside it
    refusing, other = desired(slow_raw.instance_id), desired(replacement, name="other")
    instances = (type(refusing)(**{**refusing.__dict__, "template": raw_site()}),
                 type(other)(**{**other.__dict__, "template": keep_alive_site()}))
    await converged(slow_raw.driver, AccountState(ACCOUNT, instances))
    assert (await slow_raw.get("/stop-listening")).text == "stopped\n"  # its route is cached now
    port = slow_raw.driver.port_of(ACCOUNT, slow_raw.instance_id)
    assert port is not None  # alive, its run record unchanged

    def refusing() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    await eventually(refusing, "the instance to refuse connections")
    lookups = slow_raw.cache.lookups

    refused = await slow_raw.get("/")
    assert refused.status_code == 502 and refused.json()["error"]["code"] == "bad_gateway"
    assert slow_raw.cache.lookups == lookups + 1  # the cached route may have been stale: looked up again, once

    slow_raw.routes[SLUG] = Route(ACCOUNT, replacement, "running")  # the slug now names the replacement
    moved = await slow_raw.get("/")  # nothing was sent to the refusing one: the request goes where the route is now
    assert moved.status_code == 200 and "<h1>other</h1>" in moved.text
    assert slow_raw.cache.lookups == lookups + 2


async def test_the_pool_keeps_at_most_max_idle_per_port_connections(site: Site) -> None:
    upstreams = Upstreams(max_idle_per_port=1)
    router = LocalRouter(api, driver=site.driver, routes=site.cache, upstreams=upstreams)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://testserver") as client:
        try:
            answers = await asyncio.gather(*(client.get("/", headers={"Host": HOST}) for _ in range(3)))
            assert [a.status_code for a in answers] == [200] * 3 and upstreams.connections_made > 1
            await eventually(lambda: upstream_connections(site) == 1, "the connections beyond one to close",
                             timeout=5)
        finally:
            await upstreams.aclose()


async def test_a_sweep_closes_idle_connections_their_instance_closed_and_keeps_live_ones(raw: Site) -> None:
    live = uuid.uuid4()  # a second instance, its server keeping connections alive
    closing, other = desired(raw.instance_id), desired(live, name="other")
    await converged(raw.driver, AccountState(ACCOUNT, (type(closing)(**{**closing.__dict__, "template": raw_site()}),
                                                        type(other)(**{**other.__dict__, "template": keep_alive_site()}))))
    raw.routes["other-abc123"] = Route(ACCOUNT, live, "running")
    other_host = {"Host": "other-abc123.localhost:8000"}
    assert (await raw.get("/")).text == "ok\n"  # kept alive, then closed by its instance: half-closed in the pool
    assert (await raw.client.get("/", headers=other_host)).status_code == 200
    made = raw.upstreams.connections_made

    async def swept() -> bool:  # only requests to the other instance: the closed one's port is never asked again
        assert (await raw.client.get("/", headers=other_host)).status_code == 200
        return not router_connections(raw)

    await eventually(swept, "the half-closed connection to be swept", timeout=KEEPALIVE_SECONDS / 3 + 5, interval=0.5)
    assert raw.upstreams.connections_made == made  # the live connection was kept, reused all along


async def test_a_relayed_answer_leaves_no_task_of_the_router_behind(site: Site) -> None:
    blob = bytes(range(256)) * 8192  # 2 MiB: many reads, so the relay also watches for the client leaving
    (site.driver.instance_dir(ACCOUNT, site.instance_id) / "data" / "big.bin").write_bytes(blob)
    before = asyncio.all_tasks()

    sent = await call(site, scope_for("GET", "/big.bin"))  # the client stays, silent, until the answer ends

    assert body_of(sent) == blob and ended(sent)
    await eventually(lambda: not asyncio.all_tasks() - before, "the router's own tasks to end", timeout=5)


def finals(sent: list[dict[str, Any]]) -> int:
    return sum(1 for m in sent if m["type"] == "http.response.body" and not m.get("more_body", False))


async def test_the_upstreams_date_and_server_headers_are_not_passed_on(echo: Site) -> None:
    names = {name for name, _ in (await relayed(echo, "/"))[0]["headers"]}  # http.server sends both
    assert b"seen-host" in names and not names & {b"date", b"server"}, names


async def test_the_response_carries_no_hop_by_hop_header_and_ends_once(raw: Site) -> None:
    for path in ("/closing", "/short-chunked", "/empty"):
        sent = await relayed(raw, path)
        names = {name for name, _ in sent[0]["headers"]}
        assert not names & {b"connection", b"transfer-encoding", b"date", b"server"}, (path, names)
        assert finals(sent) <= 1, (path, sent)
    empty = await relayed(raw, "/empty")  # no body at all: still ended, once, with nothing
    assert empty[0]["status"] == 204 and (b"x-seen", b"yes") in empty[0]["headers"]
    assert body_of(empty) == b"" and ended(empty) and finals(empty) == 1


async def test_a_head_answer_ends_at_once_without_a_body(site: Site) -> None:
    for _ in range(2):  # on a new connection, then on the kept-alive one
        sent = await call(site, scope_for("HEAD", "/"))
        assert sent[0]["status"] == 200 and body_of(sent) == b"" and ended(sent) and finals(sent) == 1
    assert site.upstreams.connections_made == 2  # the connection a HEAD left unfinished is not reused
    (await site.get("/")).raise_for_status()
    sent = await call(site, scope_for("HEAD", "/"))
    assert sent[0]["status"] == 200 and body_of(sent) == b"" and ended(sent)


async def test_a_connection_answered_before_the_body_was_sent_is_not_reused(raw: Site) -> None:
    messages = [{"type": "http.request", "body": b"x" * 1000, "more_body": True}]  # then the client is slow
    sent = await call(raw, scope_for("POST", "/early", [(b"content-length", b"1000000")]), messages)
    assert sent[0]["status"] == 413 and ended(sent)
    # What is left of the body would be read as the next request: the connection is closed instead.
    await eventually(lambda: not router_connections(raw), "the connection to be closed", timeout=5)


async def test_an_instance_that_never_answers_is_a_502_after_the_read_timeout(
    raw: Site, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(router_module, "READ_TIMEOUT_SECONDS", 0.5)  # 60 s in service: the same rule, sooner
    sent = await asyncio.wait_for(relayed(raw, "/silent"), timeout=10)
    assert sent[0]["status"] == 502 and b"not answering" in body_of(sent), sent
    # With a body: the timeout counts from the end of the upload.
    upload = {**scope_for("POST", "/silent"), "headers": [(b"host", HOST.encode()), (b"content-length", b"4")]}
    sent = await asyncio.wait_for(call(raw, upload, [{"type": "http.request", "body": b"data", "more_body": False}]),
                                  timeout=10)
    assert sent[0]["status"] == 502, sent


async def test_a_slow_upload_is_not_cut_by_the_read_timeout_while_the_client_still_sends(
    echo: Site, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(router_module, "READ_TIMEOUT_SECONDS", 0.5)
    parts = [b"one ", b"two ", b"three"]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not parts:
            return await asyncio.get_running_loop().create_future()  # nothing more comes from this client
        await asyncio.sleep(0.4)  # the client's own pace: the whole body takes longer than the read timeout
        part = parts.pop(0)
        return {"type": "http.request", "body": part, "more_body": bool(parts)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {**scope_for("POST", "/upload"), "headers": [(b"host", HOST.encode()), (b"transfer-encoding", b"chunked")]}
    await asyncio.wait_for(router_of(echo)(scope, receive, send), timeout=10)
    assert sent[0]["status"] == 200 and body_of(sent) == b"one two three", sent
