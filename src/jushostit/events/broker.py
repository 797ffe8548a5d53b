"""One LISTEN connection per API process, fanned out to the SSE streams of that process.

It listens on two channels: the events (`CHANNEL`, fanned out to the streams watching the event's account) and
the access changes (`ACCESS_CHANNEL`, a user id sent by database triggers when that user's access may have
shrunk), on which it tells that user's streams in this process to check their access again at once.

It also counts each user's open streams across every API process: a stream holds one of the user's slots, a
session-level advisory lock on a second connection of this process (PostgreSQL releases a dead process's
slots with its connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import uuid
from collections import deque
from typing import Any

import psycopg
import structlog

from jushostit.events.repository import (
    ACCESS_CHANNEL,
    CHANNEL,
    RELEASE_STREAM_SLOT,
    TRY_STREAM_SLOT,
    stream_slot_key,
)

log = structlog.get_logger(__name__)
QUEUE_SIZE = 1000
RECONNECT_SECONDS = 1.0


class Signal(enum.Enum):
    """What a stream must do besides sending an event."""

    recheck = "recheck"  # its user's access changed: check it again before sending anything else
    heartbeat = "heartbeat"  # the wait ran out with nothing to send


class Subscription:
    """One open stream: the pending events of the accounts it watches, and whether its access must be checked
    again. Only its own stream reads it, on the event loop the broker writes it from."""

    def __init__(self, user_id: str, slot: int) -> None:
        self.user_id = user_id
        self.slot = slot
        self.accounts: frozenset[str] = frozenset()
        self.dropped = 0  # events lost because the stream did not keep up
        self._events: deque[dict[str, Any]] = deque()
        self._recheck = False
        self._wake = asyncio.Event()

    def watch(self, account_ids: set[uuid.UUID]) -> None:
        """Receive the events of these accounts from now on; pending events of the others are dropped."""
        self.accounts = frozenset(str(a) for a in account_ids)
        if any(event.get("account_id") not in self.accounts for event in self._events):
            self._events = deque(event for event in self._events if event.get("account_id") in self.accounts)

    def offer(self, event: dict[str, Any]) -> None:
        if event.get("account_id") not in self.accounts:
            return
        if len(self._events) >= QUEUE_SIZE:
            self.dropped += 1
            return
        self._events.append(event)
        self._wake.set()

    def request_recheck(self) -> None:
        self._recheck = True
        self._wake.set()

    async def next(self, timeout: float) -> dict[str, Any] | Signal:
        """The next thing to do: a re-check of access comes before any pending event; `Signal.heartbeat` when
        `timeout` seconds pass with nothing."""
        if not self._recheck and not self._events:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(timeout, 0.0))
        if self._recheck:
            self._recheck = False
            return Signal.recheck
        if self._events:
            return self._events.popleft()
        return Signal.heartbeat


class Broker:
    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        # The stream slots this process holds, per user, and the connection holding them.
        self._slots: dict[str, set[int]] = {}
        self._slot_connection: psycopg.AsyncConnection[Any] | None = None
        self._slot_lock = asyncio.Lock()
        self._releases: set[asyncio.Task[None]] = set()

    async def subscribe(self, user_id: uuid.UUID, *, max_streams: int) -> Subscription | None:
        """A subscription watching no account yet (`Subscription.watch` says which), or None when the user already
        has `max_streams` streams open, in this process and the others. Events committed after it is watching
        are never missed."""
        slot = await self._take_slot(str(user_id), max_streams)
        if slot is None:
            return None
        subscription = Subscription(str(user_id), slot)
        self._subscribers.add(subscription)
        try:
            if self._task is None or self._task.done():
                self._listening.clear()
                self._task = asyncio.create_task(self._listen())
            await self._listening.wait()
        except BaseException:
            self.unsubscribe(subscription)
            raise
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """End a subscription and free its slot (idempotent)."""
        if subscription not in self._subscribers:
            return
        self._subscribers.discard(subscription)
        held = self._slots.get(subscription.user_id, set())
        held.discard(subscription.slot)
        if not held:
            self._slots.pop(subscription.user_id, None)
        # Called from a stream's cleanup, which may be cancelled: the unlock runs in a task of its own.
        task = asyncio.get_running_loop().create_task(self._release(subscription.user_id, subscription.slot))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def streams_of(self, user_id: uuid.UUID) -> int:
        """Streams of the user open in this process."""
        return len(self._slots.get(str(user_id), ()))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._releases):
            with contextlib.suppress(Exception):
                await task
        async with self._slot_lock:
            if self._slot_connection is not None:
                with contextlib.suppress(Exception):
                    await self._slot_connection.close()  # PostgreSQL releases every slot it held
                self._slot_connection = None

    # --- listening ----------------------------------------------------------------------------------------
    async def _listen(self) -> None:
        lost = False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    await connection.execute(f"LISTEN {ACCESS_CHANNEL}")
                    if lost:  # access changes sent while we were not listening are lost: check every stream
                        for subscription in list(self._subscribers):
                            subscription.request_recheck()
                    self._listening.set()
                    async for notification in connection.notifies():
                        if notification.channel == ACCESS_CHANNEL:
                            self._access_changed(notification.payload)
                        else:
                            self._dispatch(notification.payload)
            except Exception as error:  # noqa: BLE001 - any failure: reconnect, the streams stay open
                lost = True
                log.warning("events.listen_lost", error=type(error).__name__)
                await asyncio.sleep(RECONNECT_SECONDS)  # back off before reconnecting to the database

    def _dispatch(self, raw: str) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        for subscription in list(self._subscribers):
            subscription.offer(event)

    def _access_changed(self, user_id: str) -> None:
        for subscription in list(self._subscribers):
            if subscription.user_id == user_id:
                subscription.request_recheck()

    # --- stream slots -------------------------------------------------------------------------------------
    async def _take_slot(self, user_id: str, max_streams: int) -> int | None:
        async with self._slot_lock:
            held = self._slots.get(user_id, set())
            for slot in range(max_streams):
                # A session-level advisory lock is re-entrant: a slot this process holds must not be taken twice.
                if slot not in held and await self._slot_query(TRY_STREAM_SLOT, stream_slot_key(user_id, slot)):
                    self._slots.setdefault(user_id, set()).add(slot)
                    return slot
            return None

    async def _release(self, user_id: str, slot: int) -> None:
        async with self._slot_lock:
            if self._slot_connection is None:
                return  # closed: its locks went with it
            try:
                await self._slot_query(RELEASE_STREAM_SLOT, stream_slot_key(user_id, slot), retry=False)
            except Exception as error:  # noqa: BLE001 - the connection is dropped, and its locks with it
                log.warning("events.slot_release_failed", error=type(error).__name__)

    async def _slot_query(self, sql: str, key: int, *, retry: bool = True) -> bool:
        """Run a slot statement on the slot connection (held by the caller under _slot_lock). A connection lost
        meanwhile has lost its locks: a new one takes this process's slots again first, then the statement is
        retried once."""
        for attempt in (1, 2):
            connection = await self._slot_connection_ready()
            try:
                row = await (await connection.execute(sql, (key,))).fetchone()
                return bool(row and row[0])
            except psycopg.OperationalError:
                with contextlib.suppress(Exception):
                    await connection.close()
                self._slot_connection = None
                if attempt == 2 or not retry:
                    raise
        raise AssertionError("unreachable")

    async def _slot_connection_ready(self) -> psycopg.AsyncConnection[Any]:
        if self._slot_connection is not None and not self._slot_connection.closed:
            return self._slot_connection
        connection = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        # Take again the slots our open streams hold. One another process took meanwhile stays shared until a
        # stream closes: the count may run over the cap for that while, never under it.
        for user_id, slots in self._slots.items():
            for slot in slots:
                await connection.execute(TRY_STREAM_SLOT, (stream_slot_key(user_id, slot),))
        self._slot_connection = connection
        return connection
