from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from jushostit import container
from jushostit.auth.dependencies import Principal, require_user
from jushostit.auth.repository import AuthRepository
from jushostit.auth.scopes import Scope
from jushostit.events.broker import Broker, Signal
from jushostit.kit.db import Database, SessionDep, utcnow
from jushostit.kit.errors import TooManyRequests, responses

router = APIRouter(prefix="/v1", tags=["events"])
# Every stream checks its access again this often whatever its traffic (the safety net behind the access-change
# notifications), and sends a comment to keep idle connections open.
HEARTBEAT_SECONDS = 15.0
FULL_RETRY_AFTER_SECONDS = 5


class EventStreamResponse(StreamingResponse):
    """A stream that frees its subscription however the response ends: finished, hung up, or cancelled before its
    body started (when its generator's own cleanup never runs)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
               **responses(401, 403, 429)},
)
async def events(
    request: Request, principal: Annotated[Principal, Depends(require_user(Scope.instances_read))], session: SessionDep
) -> StreamingResponse:
    """Status changes of the caller's accounts' instances and accounts, as Server-Sent Events.

    A stream follows the caller's access: it ends within a second of a logout, the revocation of its API key or
    the suspension of the user, and stops the events of an account the caller is removed from (it ends when no
    account is left). Each user may hold `JUSHOSTIT_SSE_MAX_STREAMS_PER_USER` streams open at once, across every
    API process; one more answers 429."""
    broker: Broker = request.app.state.broker
    database: Database = request.app.state.database
    cap = container.current().settings.sse_max_streams_per_user
    subscription = await broker.subscribe(principal.user.id, max_streams=cap)
    if subscription is None:
        raise TooManyRequests(f"At most {cap} event streams may be open at once per user; close one first",
                              retry_after=FULL_RETRY_AFTER_SECONDS)

    async def allowed(repository: AuthRepository) -> set[uuid.UUID]:
        """The accounts the caller may still watch; empty once the login or key is revoked, the user suspended,
        or no membership remains."""
        if not await repository.principal_is_live(principal.user.id, principal.session_id, principal.api_key_id,
                                                  utcnow()):
            return set()
        return {account.id for account, _ in await repository.memberships_of(principal.user.id)}

    async def still_allowed() -> set[uuid.UUID]:
        async with database.reader() as reader:  # the request's session is gone: a stream outlives its request
            return await allowed(AuthRepository(reader))

    try:
        # Checked after subscribing: any access change from here on reaches the subscription as a re-check.
        subscription.watch(await allowed(AuthRepository(session)))
    except BaseException:
        broker.unsubscribe(subscription)
        raise

    async def stream() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        try:
            yield ": connected\n\n"
            beat = loop.time() + HEARTBEAT_SECONDS
            while subscription.accounts and not await request.is_disconnected():
                remaining = beat - loop.time()
                item = await subscription.next(remaining) if remaining > 0 else Signal.heartbeat
                if isinstance(item, Signal):
                    subscription.watch(await still_allowed())  # nothing left: the loop ends, and the stream
                    if item is Signal.heartbeat:
                        beat = loop.time() + HEARTBEAT_SECONDS
                        yield ": keep-alive\n\n"
                    continue
                yield f"event: {item['type']}\ndata: {json.dumps(item)}\n\n"
        finally:
            broker.unsubscribe(subscription)

    return EventStreamResponse(stream(), lambda: broker.unsubscribe(subscription), media_type="text/event-stream",
                               headers={"Cache-Control": "no-store"})
