"""The runtime driver protocol (DESIGN §4). Desired state is data built by pure functions; drivers only apply
and observe, idempotently, converging from whatever they find."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol

from jushostit.catalog.spec import TemplateSpec


class Env(Protocol):
    """An instance's environment. Its generated values are decrypted only when a runtime asks for them (to
    start a process), so a pass that changes nothing decrypts nothing."""

    def values(self) -> tuple[tuple[str, str], ...]: ...


@dataclass(frozen=True)
class DesiredInstance:
    id: uuid.UUID
    slug: str
    name: str
    template_code: str
    run: bool  # True: running (or throttled); False: stopped / expired / about to be deleted (data kept)
    throttled: bool
    env: Env
    url: str
    template: TemplateSpec | None  # None: its template is missing or invalid (see `problem`)
    problem: str | None = None  # why it cannot be started; it can still be stopped


@dataclass(frozen=True)
class AccountState:
    """Everything we own for one account. Instances absent from it are stopped; their data is removed only by
    `remove_instance`, which the reconciler calls after a fresh read of the facts still says `deleted`."""

    account_id: uuid.UUID
    instances: tuple[DesiredInstance, ...]


@dataclass(frozen=True)
class ObservedInstance:
    status: str  # running | throttled | stopped | failed | provisioning
    reason: str | None = None  # short and safe to show the customer
    error: str | None = None  # the runtime failed applying it (transient: retried with backoff); for admins


@dataclass
class Observed:
    instances: dict[uuid.UUID, ObservedInstance] = field(default_factory=dict)
    writes: int = 0  # effects the apply made; a no-op apply makes none


class RuntimeDriver(Protocol):
    async def apply(self, desired: AccountState) -> Observed: ...

    async def observe(self, account_id: uuid.UUID) -> Observed: ...

    async def remove_instance(self, account_id: uuid.UUID, instance_id: uuid.UUID) -> None:
        """Delete the instance's workload and data (irreversible; idempotent)."""
        ...

    async def destroy(self, account_id: uuid.UUID) -> None:
        """Delete everything of an account that no longer exists (irreversible; idempotent)."""
        ...

    async def logs(self, instance_id: uuid.UUID, tail: int) -> list[str]: ...

    async def restart(self, instance_id: uuid.UUID) -> None: ...
