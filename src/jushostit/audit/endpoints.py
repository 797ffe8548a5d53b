from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from jushostit.audit.repository import AuditRepository
from jushostit.audit.schemas import AuditEntryRead, AuditPage
from jushostit.auth.dependencies import require_admin
from jushostit.kit.db import SessionDep
from jushostit.kit.errors import responses
from jushostit.kit.pagination import Paging, split_page
from jushostit.kit.schemas import DateTime

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin())])


@router.get("/audit", response_model=AuditPage, responses=responses(400, 401, 403))
async def list_audit_entries(
    session: SessionDep,
    page: Paging,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    since: DateTime | None = None,
    until: DateTime | None = None,
) -> AuditPage:
    """Newest first; filter by action, actor, account, target and time."""
    rows = await AuditRepository(session).list(
        after_seq=page.after_int(),
        limit=page.limit + 1,
        action=action,
        actor_id=actor_id,
        account_id=account_id,
        target_id=target_id,
        since=since,
        until=until,
    )
    items, cursor = split_page(rows, page, "seq")
    return AuditPage(items=[AuditEntryRead.model_validate(r) for r in items], next_cursor=cursor)
