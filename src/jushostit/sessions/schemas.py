from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field

from jushostit.kit.schemas import RequestModel, ResponseModel

EndReason = Literal["ended", "timeout", "idle", "credits_exhausted", "suspended", "crashed", "start_failed"]


class SessionCreate(RequestModel):
    pool: Annotated[uuid.UUID, Field(strict=False)] | None = Field(
        default=None, description="The session pool (an instance of a session_pool template) to take the browser "
                                  "from; may be left out when the account has one")
    timeout_seconds: int | None = Field(
        default=None, ge=10, le=86_400,
        description="The session's maximum lifetime; at most the plan's `session_max_minutes` (its default)")
    wait_seconds: float = Field(
        default=0, ge=0, le=30, description="At the concurrency limit, wait this long for a session to end "
                                            "rather than be refused at once (a bounded queue)")


class SessionRead(ResponseModel):
    id: uuid.UUID
    account_id: uuid.UUID
    pool_id: uuid.UUID
    status: Literal["starting", "active", "ended"]
    end_reason: EndReason | None = Field(description="Why it ended: `ended` (by the customer), `timeout` (its "
                                                     "maximum lifetime), `idle`, `credits_exhausted`, "
                                                     "`suspended`, `crashed`, `start_failed` (refunded)")
    warm: bool | None = Field(description="Taken from the warm pool (true) or started for it (false)")
    created_at: datetime
    started_at: datetime | None
    expires_at: datetime | None
    ended_at: datetime | None
    duration_seconds: Decimal | None = Field(description="Started to ended, to the millisecond; billed per second "
                                                         "as session-minutes, with no minimum")
    credits: int = Field(description="Credits it took: one, or one per second when its pool bills per second (0 "
                                     "once refunded)")


class SessionStarted(SessionRead):
    cdp_url: str = Field(description="The Chrome DevTools Protocol WebSocket URL, through this server, with the "
                                     "session's own token: valid for this session only, until it ends")
    credits_left: int


class SessionPage(ResponseModel):
    items: list[SessionRead]
    next_cursor: str | None
