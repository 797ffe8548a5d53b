"""Append audit entries inside the caller's transaction, and verify the chain."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit.chain import GENESIS, entry_hash
from jushostit.audit.repository import AuditRepository
from jushostit.kit import context
from jushostit.kit.db import utcnow
from jushostit.models import AuditEntry


def _hashed_fields(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "created_at": entry.created_at,
        "actor_type": entry.actor_type,
        "actor_id": str(entry.actor_id) if entry.actor_id else None,
        "action": entry.action,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "account_id": str(entry.account_id) if entry.account_id else None,
        "before": entry.before,
        "after": entry.after,
        "ip": entry.ip,
        "request_id": entry.request_id,
    }


async def record(
    session: AsyncSession,
    *,
    action: str,
    target_type: str,
    target_id: uuid.UUID | str | None = None,
    account_id: uuid.UUID | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    actor: context.Actor | None = None,
) -> AuditEntry:
    """Append one entry to the chain; it commits or rolls back with the change it describes."""
    repository = AuditRepository(session)
    last_seq, last_hash = await repository.lock_chain_head()
    who = actor or context.actor.get()
    entry = AuditEntry(
        seq=last_seq + 1,
        created_at=utcnow(),
        actor_type=who.type,
        actor_id=who.id,
        action=action,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        account_id=account_id,
        before=before,
        after=after,
        ip=context.client_ip.get(),
        request_id=context.request_id.get(),
        prev_hash=last_hash or GENESIS,
    )
    entry.hash = entry_hash(entry.prev_hash, _hashed_fields(entry))
    await repository.add(entry)
    return entry


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    problem: str


async def verify(session: AsyncSession, progress: Callable[[int], None] | None = None) -> ChainProblem | None:
    """Walk the chain in order; return the first entry that does not match, or None when all do."""
    expected_prev, expected_seq = GENESIS, 1
    async for entry in AuditRepository(session).stream_in_order():
        if entry.seq != expected_seq:
            return ChainProblem(expected_seq, f"entry {expected_seq} is missing (next is {entry.seq})")
        if entry.prev_hash != expected_prev:
            return ChainProblem(entry.seq, "previous-hash link does not match the entry before it")
        if entry.hash != entry_hash(entry.prev_hash, _hashed_fields(entry)):
            return ChainProblem(entry.seq, "content does not match its hash (altered after it was written)")
        expected_prev, expected_seq = entry.hash, entry.seq + 1
        if progress:
            progress(entry.seq)
    return None
