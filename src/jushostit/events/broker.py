"""One LISTEN connection per API process, fanned out to the SSE streams of that process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import psycopg
import structlog

from jushostit.events.repository import CHANNEL

log = structlog.get_logger(__name__)
QUEUE_SIZE = 1000
RECONNECT_SECONDS = 1.0


class Broker:
    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._subscribers: dict[asyncio.Queue[dict[str, Any]], frozenset[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def subscribe(self, account_ids: set[uuid.UUID]) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers[queue] = frozenset(str(a) for a in account_ids)
        if self._task is None or self._task.done():
            self._listening.clear()
            self._task = asyncio.create_task(self._listen())
        await self._listening.wait()  # events committed after subscribe() returns are never missed
        return queue

    def watch(self, queue: asyncio.Queue[dict[str, Any]], account_ids: set[uuid.UUID]) -> None:
        """Change which accounts a subscriber receives (memberships change while a stream is open)."""
        if queue in self._subscribers:
            self._subscribers[queue] = frozenset(str(a) for a in account_ids)

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.pop(queue, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    async for notification in connection.notifies():
                        self._dispatch(notification.payload)
            except Exception as error:  # noqa: BLE001 - any failure: reconnect, the streams stay open
                log.warning("events.listen_lost", error=type(error).__name__)
                await asyncio.sleep(RECONNECT_SECONDS)  # back off before reconnecting to the database

    def _dispatch(self, raw: str) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            return
        for queue, accounts in list(self._subscribers.items()):
            if event.get("account_id") in accounts:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(event)
