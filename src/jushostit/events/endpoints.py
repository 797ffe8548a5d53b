from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from jushostit.auth.dependencies import Principal, require_user
from jushostit.auth.repository import AuthRepository
from jushostit.auth.scopes import Scope
from jushostit.events.broker import Broker
from jushostit.kit.db import SessionDep
from jushostit.kit.errors import responses

router = APIRouter(prefix="/v1", tags=["events"])
HEARTBEAT_SECONDS = 15.0


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}, **responses(401, 403)},
)
async def events(
    request: Request, principal: Annotated[Principal, Depends(require_user(Scope.instances_read))], session: SessionDep
) -> StreamingResponse:
    """Status changes of the caller's accounts' instances and accounts, as Server-Sent Events."""
    accounts = {account.id for account, _ in await AuthRepository(session).memberships_of(principal.user.id)}
    broker: Broker = request.app.state.broker
    queue = await broker.subscribe(accounts)

    async def stream() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            while not await request.is_disconnected():
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=HEARTBEAT_SECONDS)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
        finally:
            broker.unsubscribe(queue)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})
