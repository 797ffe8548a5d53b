"""The runtime driver protocol (DESIGN §4). Desired state is data built by pure functions; drivers only apply
and observe, idempotently, converging from whatever they find."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol

from jushostit.catalog.spec import DatabaseSpec, Resources, TemplateSpec
from jushostit.entitlement import Quotas

EnvPairs = tuple[tuple[str, str], ...]


class Env(Protocol):
    """Values that carry a secret (generated ones, and values built from them). They are decrypted only when a
    runtime asks for them (to start a process, to write a Secret), so a pass that changes nothing decrypts
    nothing."""

    def names(self) -> tuple[str, ...]:
        """Their names, without decrypting anything (what a workload refers to)."""
        ...

    def values(self) -> EnvPairs: ...

    def fingerprint(self) -> str:
        """A digest of what the values are made of, without decrypting anything: it changes whenever they may
        (a runtime that keeps them in a Secret compares it to decide whether to write the Secret again)."""
        ...


@dataclass(frozen=True)
class DesiredDatabase:
    """An instance's own database: its image, port, uid, data path, size and resources (`spec`), and its
    credentials, kept apart like the instance's."""

    spec: DatabaseSpec
    plain_env: EnvPairs
    secret_env: Env


@dataclass(frozen=True)
class DesiredInstance:
    id: uuid.UUID
    slug: str
    name: str
    template_code: str
    tier: str
    run: bool  # True: running (or throttled); False: stopped / expired / about to be deleted (data kept)
    throttled: bool
    deleted: bool  # its level is `deleted`: kept stopped until `remove_instance` (after a fresh read)
    plain_env: EnvPairs  # values with no secret in them: {url} {host} {slug} filled in
    secret_env: Env
    url: str
    host: str  # the public host the url names
    template: TemplateSpec | None  # None: its template is missing or invalid (see `problem`); image, port,
    # uid, volumes, probes and the runtime's own needs come from it
    resources: Resources | None  # the tier's requests and limits; None: the template no longer has the tier
    database: DesiredDatabase | None
    problem: str | None = None  # why it cannot be started; it can still be stopped


@dataclass(frozen=True)
class DesiredSeat:
    """A seat on a shared data platform: its platform user exists with `max_projects` and is active while `run`,
    deactivated (data kept) otherwise; removed, projects first, only by `remove_instance`."""

    id: uuid.UUID
    slug: str
    name: str
    platform_id: uuid.UUID
    email: str
    max_projects: int
    run: bool
    deleted: bool
    problem: str | None = None  # why it is kept deactivated although paid for (its holder left the account)


@dataclass(frozen=True)
class AccountState:
    """Everything we own for one account. Instances absent from it are stopped; their data is removed only by
    `remove_instance`, which the reconciler calls after a fresh read of the facts still says `deleted`.
    The account's own fields default to what fails closed: no quota, nothing may run on a cluster."""

    account_id: uuid.UUID
    instances: tuple[DesiredInstance, ...]
    seats: tuple[DesiredSeat, ...] = ()  # applied by the seat driver, never by a workload runtime
    quotas: Quotas = field(default_factory=Quotas)  # what its entitled plans allow, summed
    throttled: bool = False
    deleted: bool = False  # its level is `deleted` (terminated): every instance goes with it


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


class Beside:
    """A driver set beside the workload runtime for some instances (seats, browser pools): it applies and removes
    those; observing, destroying an account, logs and restarts go to the runtime."""

    def __init__(self, runtime: RuntimeDriver) -> None:
        self.runtime = runtime

    async def observe(self, account_id: uuid.UUID) -> Observed:
        return await self.runtime.observe(account_id)

    async def destroy(self, account_id: uuid.UUID) -> None:
        await self.runtime.destroy(account_id)

    async def logs(self, instance_id: uuid.UUID, tail: int) -> list[str]:
        return await self.runtime.logs(instance_id, tail)

    async def restart(self, instance_id: uuid.UUID) -> None:
        await self.runtime.restart(instance_id)
