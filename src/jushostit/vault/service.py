"""Encrypted storage of secrets we must read back, and key rotation."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.kit.crypto import SecretBox
from jushostit.kit.db import Database, utcnow
from jushostit.models import StoredSecret
from jushostit.vault.repository import SecretRepository


async def put(
    session: AsyncSession, box: SecretBox, *, owner_type: str, owner_id: uuid.UUID, name: str, value: str
) -> StoredSecret:
    repository = SecretRepository(session)
    secret = await repository.get(owner_type, owner_id, name)
    if secret is None:
        secret = StoredSecret(owner_type=owner_type, owner_id=owner_id, name=name, ciphertext=box.encrypt(value))
        await repository.add(secret)
    else:
        secret.ciphertext = box.encrypt(value)
        secret.rotated_at = utcnow()
    return secret


async def read(session: AsyncSession, box: SecretBox, *, owner_type: str, owner_id: uuid.UUID) -> dict[str, str]:
    return {s.name: box.decrypt(s.ciphertext) for s in await SecretRepository(session).of_owner(owner_type, owner_id)}


async def forget(session: AsyncSession, *, owner_type: str, owner_id: uuid.UUID) -> None:
    """Delete every secret of an owner that is going away (a credential kept past its use is a liability)."""
    await SecretRepository(session).delete_of_owner(owner_type, owner_id)


async def rotate_all(
    database: Database, box: SecretBox, *, batch: int = 500, progress: Callable[[int], None] | None = None
) -> int:
    """Re-encrypt every stored secret with the first key, one committed batch at a time (safe to re-run)."""
    done, after = 0, None
    while True:
        async with database.unit_of_work() as session:
            rows = await SecretRepository(session).batch_for_update(after=after, limit=batch)
            for row in rows:
                row.ciphertext = box.rotate(row.ciphertext)
                row.rotated_at = utcnow()
        if not rows:
            return done
        done += len(rows)
        after = rows[-1].id
        if progress:
            progress(len(rows))
