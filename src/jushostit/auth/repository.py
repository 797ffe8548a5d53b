"""Every query of the auth domain."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import cast

from sqlalchemy import bindparam, case, delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from jushostit.models import (
    Account,
    ApiKey,
    AuthSession,
    AuthThrottle,
    EmailToken,
    EmailTokenPurpose,
    MagicLink,
    Membership,
    OIDCIdentity,
    RefreshToken,
    Role,
    User,
)

# The statements of the authenticated hot path, built once (building one costs more than running it). They load
# the user whatever its suspension: the caller tells a suspended user (401 `user_suspended`) from a bad token.
_USER_WITH_LIVE_SESSION = (
    select(User)
    .join(AuthSession, AuthSession.user_id == User.id)
    .where(User.id == bindparam("user_id"), AuthSession.id == bindparam("session_id"), AuthSession.revoked_at.is_(None))
)
_ACTIVE_API_KEY = (
    select(ApiKey, User)
    .join(User, User.id == ApiKey.user_id)
    .where(
        ApiKey.token_hash == bindparam("token_hash"),
        ApiKey.revoked_at.is_(None),
        (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > bindparam("now")),
    )
)


class AuthRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *objects: object) -> None:
        self.session.add_all(objects)
        await self.session.flush()

    # users -----------------------------------------------------------------------------------------------
    async def user_by_email(self, email: str) -> User | None:
        return await self.session.scalar(select(User).where(User.email == email))

    async def user_by_id(self, user_id: uuid.UUID) -> User | None:
        return await self.session.get(User, user_id)

    async def user_with_live_session(self, user_id: uuid.UUID, session_id: uuid.UUID) -> User | None:
        return await self.session.scalar(_USER_WITH_LIVE_SESSION, {"user_id": user_id, "session_id": session_id})

    async def principal_is_live(
        self, user_id: uuid.UUID, session_id: uuid.UUID | None, api_key_id: uuid.UUID | None, now: datetime
    ) -> bool:
        """The login session (or API key) a caller authenticated with is still valid and the user not suspended:
        one query."""
        if session_id is not None:
            user = await self.user_with_live_session(user_id, session_id)
            return user is not None and user.suspended_at is None
        key = await self.session.scalar(
            select(ApiKey.id)
            .join(User, User.id == ApiKey.user_id)
            .where(
                ApiKey.id == api_key_id,
                ApiKey.user_id == user_id,
                ApiKey.revoked_at.is_(None),
                (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > now),
                User.suspended_at.is_(None),
            )
        )
        return key is not None

    async def membership(self, user_id: uuid.UUID, account_id: uuid.UUID) -> tuple[Account, Role] | None:
        row = (
            await self.session.execute(
                select(Account, Membership.role)
                .join(Membership, Membership.account_id == Account.id)
                .where(Membership.user_id == user_id, Account.id == account_id)
            )
        ).first()
        return (row[0], row[1]) if row else None

    async def memberships_of(self, user_id: uuid.UUID) -> list[tuple[Account, Role]]:
        rows = await self.session.execute(
            select(Account, Membership.role)
            .join(Membership, Membership.account_id == Account.id)
            .where(Membership.user_id == user_id)
            .order_by(Account.id)
        )
        return [(account, role) for account, role in rows.all()]

    # sessions and refresh tokens ----------------------------------------------------------------------------
    async def refresh_token_for_update(self, hashed: str) -> tuple[RefreshToken, AuthSession] | None:
        row = (
            await self.session.execute(
                select(RefreshToken, AuthSession)
                .join(AuthSession, AuthSession.id == RefreshToken.session_id)
                .where(RefreshToken.token_hash == hashed)
                .with_for_update(of=RefreshToken)
            )
        ).first()
        return (row[0], row[1]) if row else None

    async def revoke_session(self, session_id: uuid.UUID, now: datetime, reason: str) -> bool:
        result = await self.session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
        )
        return bool(cast(CursorResult, result).rowcount)

    async def revoke_all_sessions(self, user_id: uuid.UUID, now: datetime, reason: str) -> int:
        result = await self.session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
        )
        return int(cast(CursorResult, result).rowcount or 0)

    async def revoke_all_api_keys(self, user_id: uuid.UUID, now: datetime) -> int:
        result = await self.session.execute(
            update(ApiKey).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None)).values(revoked_at=now)
        )
        return int(cast(CursorResult, result).rowcount or 0)

    # magic links ---------------------------------------------------------------------------------------------
    async def consume_magic_link(self, hashed: str, now: datetime) -> uuid.UUID | None:
        """Mark the link used if it is unused and unexpired (compare-and-set); return its user."""
        return await self.session.scalar(
            update(MagicLink)
            .where(MagicLink.token_hash == hashed, MagicLink.used_at.is_(None), MagicLink.expires_at > now)
            .values(used_at=now)
            .returning(MagicLink.user_id)
        )

    # e-mailed tokens (address verification, password reset) --------------------------------------------------
    async def consume_email_token(self, hashed: str, purpose: EmailTokenPurpose, now: datetime) -> uuid.UUID | None:
        """Mark the token used if it is unused, unexpired and for this purpose (compare-and-set); return its user."""
        return await self.session.scalar(
            update(EmailToken)
            .where(
                EmailToken.token_hash == hashed,
                EmailToken.purpose == purpose.value,
                EmailToken.used_at.is_(None),
                EmailToken.expires_at > now,
            )
            .values(used_at=now)
            .returning(EmailToken.user_id)
        )

    async def retire_email_tokens(self, user_id: uuid.UUID, purpose: EmailTokenPurpose, now: datetime) -> None:
        """Spend every open token of this purpose (a completed reset voids the other reset links)."""
        await self.session.execute(
            update(EmailToken)
            .where(EmailToken.user_id == user_id, EmailToken.purpose == purpose.value, EmailToken.used_at.is_(None))
            .values(used_at=now)
        )

    # API keys ------------------------------------------------------------------------------------------------
    async def active_api_key(self, hashed: str, now: datetime) -> tuple[ApiKey, User] | None:
        row = (await self.session.execute(_ACTIVE_API_KEY, {"token_hash": hashed, "now": now})).first()
        return (row[0], row[1]) if row else None

    async def touch_api_key(self, key: ApiKey, now: datetime) -> None:
        """Record the key's last use: one UPDATE (committed on its own by a read-only request's session)."""
        await self.session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        set_committed_value(key, "last_used_at", now)

    async def api_keys_of(self, user_id: uuid.UUID, *, after: uuid.UUID | None, limit: int) -> list[ApiKey]:
        stmt = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id).limit(limit)
        if after is not None:
            stmt = stmt.where(ApiKey.id > after)
        return list((await self.session.scalars(stmt)).all())

    async def api_key_of(self, user_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
        return await self.session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id))

    # OIDC ----------------------------------------------------------------------------------------------------
    async def oidc_identity(self, issuer: str, subject: str) -> OIDCIdentity | None:
        return await self.session.scalar(
            select(OIDCIdentity).where(OIDCIdentity.issuer == issuer, OIDCIdentity.subject == subject)
        )

    # failed sign-in throttling --------------------------------------------------------------------------------
    async def throttles(self, keys: list[str]) -> list[AuthThrottle]:
        return list((await self.session.scalars(select(AuthThrottle).where(AuthThrottle.key.in_(keys)))).all())

    async def count_failure(self, key: str, now: datetime, forget_before: datetime) -> AuthThrottle:
        """Atomically add one failure to `key` (upsert), returning the row locked for this transaction.
        A streak whose last failure is older than `forget_before` starts again from one."""
        await self.session.execute(
            insert(AuthThrottle)
            .values(key=key, failures=1, last_failure_at=now)
            .on_conflict_do_update(
                index_elements=[AuthThrottle.key],
                set_={
                    "failures": case(
                        (AuthThrottle.last_failure_at < forget_before, 1), else_=AuthThrottle.failures + 1
                    ),
                    "last_failure_at": now,
                },
            )
        )
        row = await self.session.scalar(
            select(AuthThrottle).where(AuthThrottle.key == key).with_for_update().execution_options(populate_existing=True)
        )
        assert row is not None
        return row

    async def clear_throttle(self, key: str) -> None:
        await self.session.execute(delete(AuthThrottle).where(AuthThrottle.key == key))

    # housekeeping --------------------------------------------------------------------------------------------
    async def purge_expired(self, now: datetime, stale_before: datetime) -> int:
        removed = 0
        for stmt in (
            delete(MagicLink).where(MagicLink.expires_at < stale_before),
            delete(EmailToken).where(EmailToken.expires_at < stale_before),
            delete(RefreshToken).where(RefreshToken.expires_at < stale_before),
            delete(AuthThrottle).where(
                AuthThrottle.last_failure_at < stale_before,
                (AuthThrottle.locked_until.is_(None)) | (AuthThrottle.locked_until < now),
            ),
        ):
            removed += cast(CursorResult, await self.session.execute(stmt)).rowcount or 0
        return removed
