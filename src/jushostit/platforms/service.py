"""Platforms: registration (a connection test first, so nothing is half-registered) and deletion. Never commits;
every change is audited in its transaction.

The admin API key is a stored secret of the platform (vault, owner_type `platform`): encrypted with the secret
box, re-encrypted by `jushostit keys rotate`, decrypted only to talk to the platform, never returned nor logged.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit
from jushostit.kit.crypto import SecretBox
from jushostit.kit.db import utcnow
from jushostit.kit.errors import AppError, BadRequest, Conflict, NotFound
from jushostit.models import Platform
from jushostit.platforms.hopsworks import HopsworksClient, PlatformError
from jushostit.platforms.repository import PlatformRepository, SeatRepository
from jushostit.platforms.schemas import PlatformCreate
from jushostit.vault import service as vault

SECRET_OWNER = "platform"
API_KEY_SECRET = "api_key"
# An address no user has: looking it up proves the API answers and takes the key, and changes nothing.
CONNECTION_PROBE = "connection-check@jushostit.invalid"


class PlatformUnreachable(AppError):
    status_code = 502
    code = "platform_unreachable"


class PlatformRefused(AppError):
    status_code = 422
    code = "platform_credentials_refused"


def _audited(platform: Platform) -> dict[str, object]:
    """What the audit log says of a platform: never its API key."""
    return {"name": platform.name, "kind": platform.kind, "base_url": platform.base_url,
            "edition": platform.edition, "project_limits": platform.project_limits,
            "cluster_id": str(platform.cluster_id) if platform.cluster_id else None,
            "oidc_provider": platform.oidc_provider}


async def check_connection(base_url: str, api_key: str, *, timeout: float) -> None:
    """Ask the platform's admin API one harmless question with the key: 502 `platform_unreachable` when it does
    not answer as Hopsworks does, 422 `platform_credentials_refused` when it refuses the key."""
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, trust_env=False) as http:
        try:
            await HopsworksClient(http, api_key, attempts=1).find_user(CONNECTION_PROBE)
        except PlatformError as error:
            if error.status in {401, 403}:
                raise PlatformRefused("The platform refused the API key (an admin key with the ADMIN scope is "
                                      "needed)", details={"status": error.status}) from error
            raise PlatformUnreachable(f"The platform's admin API could not be used: {error}"[:500],
                                      details={"status": error.status}) from error


async def register(session: AsyncSession, box: SecretBox, *, data: PlatformCreate, timeout: float,
                   sign_in_providers: Collection[str]) -> Platform:
    """Refuse a name in use (409 `platform_name_taken`), run the connection test, and only then record the
    platform with its API key encrypted, audited."""
    if data.oidc_provider is not None and data.oidc_provider not in sign_in_providers:
        raise BadRequest(f"No sign-in provider {data.oidc_provider!r} is configured (JUSHOSTIT_OIDC_PROVIDERS)",
                         code="unknown_oidc_provider", details={"configured": sorted(sign_in_providers)})
    repository = PlatformRepository(session)
    if await repository.name_taken(data.name):
        raise _name_taken(data.name)
    cluster_id = None
    if data.cluster is not None:
        cluster_id = await repository.cluster_named(data.cluster)
        if cluster_id is None:
            raise NotFound(f"No cluster named {data.cluster!r} is registered", code="cluster_not_found",
                           details={"cluster": data.cluster})
    api_key = data.api_key.get_secret_value()
    await check_connection(data.base_url, api_key, timeout=timeout)
    platform = await repository.add({
        "name": data.name, "kind": data.kind, "base_url": data.base_url, "edition": data.edition,
        "project_limits": data.project_limits.model_dump(), "cluster_id": cluster_id,
        "oidc_provider": data.oidc_provider, "checked_at": utcnow(),
    })
    if platform is None:  # registered meanwhile under the same name
        raise _name_taken(data.name)
    await vault.put(session, box, owner_type=SECRET_OWNER, owner_id=platform.id, name=API_KEY_SECRET, value=api_key)
    await audit.record(session, action="platform.registered", target_type="platform", target_id=platform.id,
                       after=_audited(platform))
    return platform


async def delete(session: AsyncSession, *, platform_id: uuid.UUID) -> None:
    repository = PlatformRepository(session)
    platform = await repository.by_id(platform_id)
    if platform is None:
        raise NotFound("Platform not found", code="platform_not_found")
    if await SeatRepository(session).in_use(platform.id):
        raise Conflict("The platform still holds seats: delete them first", code="platform_in_use",
                       details={"name": platform.name})
    await SeatRepository(session).drop_removed(platform.id)
    before = _audited(platform)
    await vault.forget(session, owner_type=SECRET_OWNER, owner_id=platform.id)
    await repository.delete(platform)
    await audit.record(session, action="platform.deleted", target_type="platform", target_id=platform_id,
                       before=before)


@dataclass(frozen=True)
class Connection:
    """How to talk to a registered platform: its URL and its admin API key, decrypted for this use only."""

    platform_id: uuid.UUID
    name: str
    base_url: str
    edition: str
    api_key: str = field(repr=False)

    def http(self, *, timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=timeout, trust_env=False)


async def connection(session: AsyncSession, box: SecretBox, platform: Platform) -> Connection:
    values = await vault.read(session, box, owner_type=SECRET_OWNER, owner_id=platform.id)
    return Connection(platform.id, platform.name, platform.base_url, platform.edition, values.get(API_KEY_SECRET, ""))


async def user_exists(connection: Connection, email: str, *, timeout: float) -> bool:
    """Whether the platform has a user with exactly this email; 502 `platform_unreachable` when it cannot say."""
    async with connection.http(timeout=timeout) as http:
        try:
            return await HopsworksClient(http, connection.api_key).find_user(email) is not None
        except PlatformError as error:
            raise PlatformUnreachable(f"The platform {connection.name!r} could not be asked: {error}"[:500],
                                      details={"status": error.status}) from error


def _name_taken(name: str) -> Conflict:
    return Conflict(f"A platform named {name!r} is already registered", code="platform_name_taken",
                    details={"name": name})
