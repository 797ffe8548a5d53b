from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from jushostit.kit.schemas import RequestModel, ResponseModel

InstanceName = Annotated[
    str, Field(pattern=r"^[a-z][a-z0-9-]{0,39}$", max_length=40, description="DNS label: a-z, 0-9, -")
]


class InstanceCreate(RequestModel):
    template: Annotated[str, Field(min_length=1, max_length=64)]
    name: InstanceName
    tier: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    member: Annotated[uuid.UUID, Field(strict=False)] | None = Field(  # a UUID arrives as a JSON string
        default=None, description="For a seat (required): the account member (user id) the seat is for. Ordering "
                                  "a seat needs the owner or admin role.")


class InstanceRead(ResponseModel):
    id: uuid.UUID
    account_id: uuid.UUID
    template: str
    name: str
    slug: str
    tier: str
    url: str
    status: str = Field(description="Observed status: what the runtime reported, not the intent")
    status_reason: str | None
    desired_level: str
    last_error: str | None = Field(
        description="A short, safe note when the platform could not apply the last change (it retries on its "
                    "own); the full error is shown to platform admins only"
    )
    last_reconciled_at: datetime | None = Field(description="When the reconciler last changed this instance")
    delete_requested_at: datetime | None
    expired_at: datetime | None
    created_at: datetime


class InstancePage(ResponseModel):
    items: list[InstanceRead]
    next_cursor: str | None


class Credential(ResponseModel):
    name: str
    value: str


class Credentials(ResponseModel):
    url: str
    values: list[Credential]


class LogLines(ResponseModel):
    lines: list[str]


DeleteWhen = Literal["now", "period_end"]


class FileWritten(ResponseModel):
    path: str = Field(description="Where the file is, relative to the site's root (served at `/<path>`)")
    size: int = Field(description="Bytes written")
    created: bool = Field(description="True: a new file (201); false: an existing one replaced (200)")
