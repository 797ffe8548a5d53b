"""Browser sessions: start one (a CDP URL through our proxy), list, read and end them; and the CDP proxy itself,
a WebSocket that takes the session's token and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

import structlog
import websockets
from fastapi import APIRouter, Depends, Header, Query, Request, WebSocket, WebSocketDisconnect, status
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit import container
from jushostit.auth.dependencies import (
    AccountAccess,
    AuthRule,
    authenticated,
    check_account_access,
    declare_rule,
    require_account,
)
from jushostit.auth.repository import AuthRepository
from jushostit.auth.scopes import Scope
from jushostit.kit.db import SessionDep, read_only
from jushostit.kit.errors import Conflict, NotFound, responses
from jushostit.kit.pagination import Paging, split_page
from jushostit.models import BrowserSession, Role
from jushostit.runtime.registry import KUBERNETES, browser_pools
from jushostit.sessions import service
from jushostit.sessions.repository import SessionRepository
from jushostit.sessions.schemas import SessionCreate, SessionPage, SessionRead, SessionStarted

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v1", tags=["sessions"])

AccountSessionsWriter = Annotated[AccountAccess, Depends(require_account(Scope.instances_write))]
AccountSessionsReader = Annotated[AccountAccess, Depends(require_account(Scope.instances_read))]
REFUSED = 4403  # a handshake refused before it was accepted: the client sees HTTP 403


@dataclass(frozen=True)
class SessionAccess:
    session: BrowserSession
    role: Role


def require_session(scope: Scope, min_role: Role = Role.member):  # noqa: ANN201 - a FastAPI dependency
    """A member of the session's account; anyone else gets 404, as if it did not exist."""

    async def dependency(request: Request, session: SessionDep, session_id: uuid.UUID) -> SessionAccess:
        principal = await authenticated(request, session)
        found = await SessionRepository(session).by_id(session_id)
        membership = await AuthRepository(session).membership(principal.user.id, found.account_id) if found else None
        if found is None or membership is None:
            raise NotFound("Session not found", code="session_not_found")
        check_account_access(principal, membership[1], scope, min_role)
        return SessionAccess(found, membership[1])

    return declare_rule(dependency, AuthRule.account)


SessionReader = Annotated[SessionAccess, Depends(require_session(Scope.instances_read))]
SessionWriter = Annotated[SessionAccess, Depends(require_session(Scope.instances_write))]


def session_read(row: BrowserSession) -> dict[str, Any]:
    return {
        "id": row.id, "account_id": row.account_id, "pool_id": row.pool_id, "status": row.status,
        "end_reason": row.end_reason, "warm": row.warm, "created_at": row.created_at, "started_at": row.started_at,
        "expires_at": row.expires_at, "ended_at": row.ended_at,
        "duration_seconds": Decimal(row.duration_ms) / 1000 if row.duration_ms is not None else None,
        "credits": service.credits_taken(row),
    }


def cdp_url(request: Request, row: BrowserSession, token: str) -> str:
    base = str(request.base_url).rstrip("/")
    scheme = "wss" if base.startswith("https://") else "ws"
    return f"{scheme}://{base.split('://', 1)[1]}/v1/sessions/{row.id}/cdp?token={token}"


@router.post(
    "/accounts/{account_id}/sessions", status_code=status.HTTP_201_CREATED, response_model=SessionStarted,
    responses=responses(400, 401, 402, 403, 404, 409, 422, 429, 503),
)
async def start_session(
    body: SessionCreate, access: AccountSessionsWriter, request: Request, session: SessionDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)] = None,
) -> SessionStarted:
    """Take a browser from one of the account's session pools: one credit is debited (402 with the balance when
    there is none, debiting nothing), the concurrency limit of the plan is kept (409 `session_limit_reached`, or
    wait up to `wait_seconds`), and the answer carries the CDP URL through this server with the session's own
    token. A browser that cannot be had is 503 `session_start_failed`, its credit refunded. Repeated with the same
    `Idempotency-Key`, it answers the session the first request started (with a new token; nothing debited), 409
    `session_starting` while that one is still starting, 409 `session_ended` once it has ended."""
    c = container.current()
    if c.settings.runtime == KUBERNETES:  # refused before anything is debited
        raise Conflict("Browser sessions are lent by the local runtime only, for now", code="sessions_not_supported")
    if not c.settings.run_worker_in_serve:  # the pools are run by the process that reconciles them
        raise Conflict("Browser sessions need the local runtime in one process: serve with its worker "
                       "(JUSHOSTIT_RUN_WORKER_IN_SERVE=true)", code="sessions_not_supported")
    # The debit commits before a browser is taken (and the connection goes back to the pool meanwhile); the
    # outcome commits with the request.
    started = await service.start(session, session, c.settings, browser_pools(c.settings),
                                  account_id=access.account.id, data=body, idempotency_key=idempotency_key)
    return SessionStarted(**session_read(started.session), cdp_url=cdp_url(request, started.session, started.token),
                          credits_left=started.credits_left)


@router.get("/accounts/{account_id}/sessions", response_model=SessionPage, responses=responses(400, 401, 403, 404))
@read_only
async def list_sessions(access: AccountSessionsReader, session: SessionDep, page: Paging) -> SessionPage:
    """The account's sessions, newest first, with their duration and the credits they took."""
    rows = await SessionRepository(session).of_account(access.account.id, after=page.after_uuid(),
                                                       limit=page.limit + 1)
    items, cursor = split_page(rows, page, "id")
    return SessionPage(items=[SessionRead(**session_read(row)) for row in items], next_cursor=cursor)


@router.get("/sessions/{session_id}", response_model=SessionRead, responses=responses(401, 403, 404))
@read_only
async def get_session(access: SessionReader) -> SessionRead:
    return SessionRead(**session_read(access.session))


@router.post("/sessions/{session_id}/end", response_model=SessionRead, responses=responses(401, 403, 404))
async def end_session(access: SessionWriter, session: SessionDep) -> SessionRead:
    """End it now (also at the concurrency limit): its duration is recorded, its browser discarded. Ending an
    ended session changes nothing."""
    ended = await service.close(session, session_id=access.session.id, reason="ended")
    await session.commit()  # recorded before the browser goes
    await service.release(browser_pools(container.current().settings), ended)
    return SessionRead(**session_read(ended.row))


@router.websocket("/sessions/{session_id}/cdp")
async def cdp_proxy(websocket: WebSocket, session_id: uuid.UUID, token: Annotated[str, Query(max_length=200)] = "") -> None:
    """The Chrome DevTools Protocol of the session's browser, relayed both ways. Only the session's token opens
    it, only while the session is active; when we end the session the close frame says why (code 4000 + n)."""
    c = container.current()
    pools = browser_pools(c.settings)
    async with c.database.reader() as session:
        row = await _active(session, session_id, token)
    browser = pools.lent(row.browser_id) if row is not None and row.browser_id else None
    if row is None or browser is None:
        await websocket.close(code=REFUSED)
        return
    try:
        upstream = await websockets.connect(browser.ws_url, max_size=None, open_timeout=5, ping_interval=None)
    except (OSError, websockets.WebSocketException, TimeoutError):
        await websocket.close(code=REFUSED)
        return
    await websocket.accept()

    async def close(code: int, reason: str) -> None:
        await websocket.close(code=code, reason=reason)

    key = service.LIVE.connect(session_id, close)
    try:
        await _relay(websocket, upstream, session_id)
    finally:
        service.LIVE.disconnect(session_id, key)
        await upstream.close()


async def _active(session: AsyncSession, session_id: uuid.UUID, token: str) -> BrowserSession | None:
    row = await SessionRepository(session).by_id(session_id)
    if row is None or row.status != "active" or not token or not service.token_matches(row, token):
        return None
    return row


async def _relay(websocket: WebSocket, upstream: websockets.ClientConnection, session_id: uuid.UUID) -> None:
    async def to_browser() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                service.LIVE.touch(session_id)
                text = message.get("text")
                if text is None:  # CDP is JSON text: a binary frame would pass the checks unread
                    continue
                why = service.refusal(text)
                if why is not None:
                    await websocket.send_text(service.refused_answer(text, why))
                    continue
                await upstream.send(text)

    async def to_client() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in upstream:
                service.LIVE.touch(session_id)
                if isinstance(message, str):
                    await websocket.send_text(message)
                else:
                    await websocket.send_bytes(message)

    tasks = [asyncio.create_task(to_browser()), asyncio.create_task(to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
