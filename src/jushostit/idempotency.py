"""`Idempotency-Key` for POSTs with money or provisioning effects (DESIGN §10, REFERENCE §1 F1).

The first request with a key claims (scope, key) by inserting its row in the same transaction as its effect,
and stores its response there before the commit. Scope is the principal plus the route template, so keys of
different users or routes never meet. The claim is a unique constraint, never check-then-act:

- same key, same request (path and body) → the stored response is replayed byte for byte
  (`Idempotent-Replayed: true`), without running the action again;
- same key, another request → 409 `idempotency_key_reused`;
- a concurrent request with the same key blocks on the unique index until the first one ends, then replays
  its response — or, when the first rolled back (an error), runs as if it came first.

Errors are not stored: the transaction that would hold them rolls back, so a retry runs again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, cast

from fastapi import Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.kit.errors import Conflict
from jushostit.kit.ids import new_id
from jushostit.models import IdempotencyKey

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_PENDING_STATUS = 0  # a claimed row before its response is stored; only its own transaction ever sees it


class IdempotencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(self, scope: str, key: str, request_hash: str) -> uuid.UUID | None:
        """Insert the claim; None when (scope, key) already exists (after waiting for its transaction)."""
        stmt = (
            insert(IdempotencyKey)
            .values(id=new_id(), scope=scope, key=key, request_hash=request_hash, status_code=_PENDING_STATUS,
                    response={})
            .on_conflict_do_nothing(index_elements=[IdempotencyKey.scope, IdempotencyKey.key])
            .returning(IdempotencyKey.id)
        )
        return await self.session.scalar(stmt)

    async def stored(self, scope: str, key: str) -> IdempotencyKey | None:
        return await self.session.scalar(
            select(IdempotencyKey).where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
        )

    async def purge(self, before: datetime) -> int:
        """Forget keys older than `before`: a retry that late is a new request."""
        result = cast(
            CursorResult, await self.session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < before))
        )
        return int(result.rowcount or 0)

    async def complete(self, claim_id: uuid.UUID, status_code: int, response: str) -> None:
        await self.session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.id == claim_id)
            .values(status_code=status_code, response=response)
        )


@dataclass(frozen=True)
class Idempotency:
    """What one request needs to be idempotent; `run` does the rest."""

    key: str | None
    method: str
    route: str  # the route template, e.g. /v1/accounts/{account_id}/checkout
    path: str

    def scope(self, principal_id: uuid.UUID) -> str:
        return f"user:{principal_id}:{self.method} {self.route}"

    def request_hash(self, body: BaseModel | None) -> str:
        payload = {"path": self.path, "body": jsonable_encoder(body) if body is not None else None}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    async def run(
        self,
        session: AsyncSession,
        *,
        principal_id: uuid.UUID,
        body: BaseModel | None,
        status_code: int,
        action: Callable[[], Awaitable[BaseModel]],
    ) -> Response:
        """Run `action` once per key; its result (a response model) is stored and returned as JSON."""
        if self.key is None:
            return JSONResponse(jsonable_encoder(await action()), status_code=status_code)
        repository = IdempotencyRepository(session)
        scope, request_hash = self.scope(principal_id), self.request_hash(body)
        claim_id = await repository.claim(scope, self.key, request_hash)
        if claim_id is None:
            stored = await repository.stored(scope, self.key)
            if stored is None or stored.status_code == _PENDING_STATUS:
                raise Conflict("A request with this Idempotency-Key is still in progress; retry it",
                               code="idempotency_key_in_use")
            if stored.request_hash != request_hash:
                raise Conflict(
                    "This Idempotency-Key was already used for a different request", code="idempotency_key_reused"
                )
            return Response(
                stored.response, status_code=stored.status_code, media_type="application/json",
                headers={REPLAYED_HEADER: "true"},
            )
        response = JSONResponse(jsonable_encoder(await action()), status_code=status_code)
        # Stored as the rendered text (a JSON string in the JSONB column), so a replay is byte for byte the same.
        await repository.complete(claim_id, status_code, bytes(response.body).decode())
        return response


def idempotency(
    request: Request,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            min_length=1,
            max_length=200,
            pattern=r"^[\x21-\x7e]+$",
            description="Makes the request safe to retry: the same key and body replay the first response.",
        ),
    ] = None,
) -> Idempotency:
    route = request.scope.get("route")
    return Idempotency(key, request.method, getattr(route, "path", request.url.path), request.url.path)


IdempotencyDep = Annotated[Idempotency, Depends(idempotency)]
