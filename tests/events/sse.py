"""Reading GET /v1/events in-process as it arrives, and keeping events flowing while a test acts.

httpx's ASGITransport hands a response over only once the app has finished it; `open_stream` drives the ASGI
app directly instead (as tests/streaming.py does), recording each chunk with the monotonic time it was sent and
when the app ended the response, until the test hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from jushostit.events.repository import EventRepository
from tests.live import Live, eventually

OPEN_DEADLINE = 10.0
PUBLISH_INTERVAL = 0.05  # the pace of the event generator


class Stream:
    def __init__(self, app: Any, headers: dict[str, str]) -> None:
        self.app, self.headers = app, headers
        self.status: int | None = None
        self.chunks: list[tuple[float, str]] = []
        self.ended_at: float | None = None  # when the app sent the last chunk (or returned)
        self._hung_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    @property
    def text(self) -> str:
        return "".join(chunk for _, chunk in self.chunks)

    def events(self, since: float = 0.0, **match: str) -> list[tuple[float, dict[str, Any]]]:
        """The events received at or after `since` whose fields equal `match`, with the time each arrived."""
        found = []
        for at, chunk in self.chunks:
            for line in chunk.splitlines():
                if line.startswith("data: ") and at >= since:
                    event = json.loads(line.removeprefix("data: "))
                    if all(event.get(k) == v for k, v in match.items()):
                        found.append((at, event))
        return found

    def keep_alives(self, since: float = 0.0) -> int:
        return sum(1 for at, chunk in self.chunks if chunk.startswith(": keep-alive") and at >= since)

    async def _run(self) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": "/v1/events", "raw_path": b"/v1/events", "query_string": b"",
            "root_path": "", "client": ("203.0.113.7", 50000), "server": ("testserver", 80), "state": {},
            "headers": [(b"host", b"testserver")]
            + [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()],
        }
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self._hung_up.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                now = time.monotonic()
                if message.get("body"):
                    self.chunks.append((now, message["body"].decode()))
                if not message.get("more_body", False) and self.ended_at is None:
                    self.ended_at = now

        try:
            await self.app(scope, receive, send)
        finally:
            if self.ended_at is None:
                self.ended_at = time.monotonic()

    async def wait_ended(self, deadline: float = OPEN_DEADLINE) -> float:
        """When the app ended the stream (fails after `deadline` seconds)."""
        await eventually(lambda: self.ended, "the stream to end", timeout=deadline, interval=0.005)
        assert self.ended_at is not None
        return self.ended_at


@contextlib.asynccontextmanager
async def open_stream(app: Any, headers: dict[str, str]) -> AsyncIterator[Stream]:
    """An open stream (its ": connected" received), hung up on leaving the block."""
    stream = Stream(app, headers)
    stream._task = asyncio.create_task(stream._run())
    try:
        await eventually(lambda: stream.chunks or stream.ended, "the stream to answer", timeout=OPEN_DEADLINE,
                         interval=0.005)
        assert stream.status == 200 and stream.text.startswith(": connected"), (stream.status, stream.text)
        yield stream
    finally:
        stream._hung_up.set()
        await asyncio.wait_for(stream._task, timeout=OPEN_DEADLINE)


@contextlib.asynccontextmanager
async def events_flowing(live: Live, *account_ids: str) -> AsyncIterator[list[float]]:
    """Instance status events for the accounts, committed one after another every PUBLISH_INTERVAL, for the
    duration of the block; yields the times they were published."""
    published: list[float] = []
    instance_id = str(uuid.uuid4())

    async def publish() -> None:
        sequence = 0
        while True:
            for account_id in account_ids:
                async with live.container.database.unit_of_work() as session:
                    await EventRepository(session).publish({
                        "type": "instance.status", "account_id": account_id, "instance_id": instance_id,
                        "status": "running", "sequence": sequence,
                    })
            published.append(time.monotonic())
            sequence += 1
            await asyncio.sleep(PUBLISH_INTERVAL)  # the generator's pace, not a wait for a condition

    task = asyncio.create_task(publish())
    try:
        yield published
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
