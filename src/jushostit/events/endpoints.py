from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from jushostit.auth.dependencies import Principal, require_user
from jushostit.auth.repository import AuthRepository
from jushostit.auth.scopes import Scope
from jushostit.events.broker import Broker
from jushostit.kit.db import Database, SessionDep, utcnow
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

    database: Database = request.app.state.database

    async def still_allowed() -> set[uuid.UUID]:
        """The accounts the caller may still watch; empty once the login or key is revoked or no membership
        remains (a stream outlives its request, so access is checked again at every heartbeat)."""
        async with database.reader() as reader:
            repository = AuthRepository(reader)
            if not await repository.principal_is_live(principal.user.id, principal.session_id, principal.api_key_id,
                                                      utcnow()):
                return set()
            return {account.id for account, _ in await repository.memberships_of(principal.user.id)}

    async def stream() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            while not await request.is_disconnected():
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=HEARTBEAT_SECONDS)
                except TimeoutError:
                    allowed = await still_allowed()
                    if not allowed:
                        return
                    broker.watch(queue, allowed)
                    yield ": keep-alive\n\n"
                    continue
                yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
        finally:
            broker.unsubscribe(queue)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})
