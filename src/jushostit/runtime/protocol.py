"""The runtime driver protocol (DESIGN §4). Desired state is data built by pure functions; drivers only apply
and observe, idempotently, converging from whatever they find."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol

from jushostit.catalog.spec import TemplateSpec


@dataclass(frozen=True)
class DesiredInstance:
    id: uuid.UUID
    slug: str
    name: str
    template_code: str
    run: bool  # True: running (or throttled); False: stopped / expired (data kept)
    throttled: bool
    env: tuple[tuple[str, str], ...]
    url: str
    template: TemplateSpec


@dataclass(frozen=True)
class AccountState:
    """Everything we own for one account. Instances absent from it are removed with their data."""

    account_id: uuid.UUID
    instances: tuple[DesiredInstance, ...]


@dataclass(frozen=True)
class ObservedInstance:
    status: str  # running | stopped | failed | provisioning | absent
    reason: str | None = None
    error: str | None = None  # the runtime failed applying this instance (retried); not a settled state


@dataclass
class Observed:
    instances: dict[uuid.UUID, ObservedInstance] = field(default_factory=dict)
    writes: int = 0  # effects the apply made; a no-op apply makes none


class RuntimeDriver(Protocol):
    async def apply(self, desired: AccountState) -> Observed: ...

    async def observe(self, account_id: uuid.UUID) -> Observed: ...

    async def destroy(self, account_id: uuid.UUID) -> None: ...

    async def logs(self, instance_id: uuid.UUID, tail: int) -> list[str]: ...

    async def restart(self, instance_id: uuid.UUID) -> None: ...
