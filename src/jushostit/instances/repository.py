"""Every query about instances; `readable()` is the one place their tenant scoping is built."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.models import Account, Instance, Membership, OIDCIdentity, Role, ServiceTemplate, User


class InstanceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @staticmethod
    def readable(user_id: uuid.UUID) -> Select[Instance, Account, Role]:
        """Instances of accounts the user is a member of, with the account and the user's role there."""
        return (
            select(Instance, Account, Membership.role)
            .join(Account, Account.id == Instance.account_id)
            .join(Membership, (Membership.account_id == Instance.account_id) & (Membership.user_id == user_id))
            .where(Instance.deleted_at.is_(None))
        )

    async def readable_by(self, user_id: uuid.UUID, instance_id: uuid.UUID) -> tuple[Instance, Account, Role] | None:
        row = (await self.session.execute(_READABLE_BY_ID, {"user_id": user_id, "instance_id": instance_id})).first()
        return (row[0], row[1], row[2]) if row else None

    async def of_account(self, account_id: uuid.UUID, *, after: uuid.UUID | None, limit: int) -> list[Instance]:
        stmt = (
            select(Instance)
            .where(Instance.account_id == account_id, Instance.deleted_at.is_(None))
            .order_by(Instance.id)
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(Instance.id > after)
        return list((await self.session.scalars(stmt)).all())

    async def counting_toward_quota(self, account_id: uuid.UUID, now: datetime) -> list[Instance]:
        """Live instances, including those whose deletion is scheduled but not yet due (they still run)."""
        stmt = select(Instance).where(
            Instance.account_id == account_id,
            Instance.deleted_at.is_(None),
            (Instance.delete_requested_at.is_(None)) | (Instance.delete_requested_at > now),
        )
        return list((await self.session.scalars(stmt)).all())

    async def member(self, account_id: uuid.UUID, user_id: uuid.UUID) -> User | None:
        return await self.session.scalar(
            select(User).join(Membership, Membership.user_id == User.id)
            .where(Membership.account_id == account_id, User.id == user_id)
        )

    async def sign_in_subject(self, user_id: uuid.UUID, provider: str) -> str | None:
        """The user's subject at a sign-in provider, if they have signed in through it."""
        return await self.session.scalar(
            select(OIDCIdentity.subject).where(OIDCIdentity.user_id == user_id, OIDCIdentity.provider == provider)
        )

    async def name_taken(self, account_id: uuid.UUID, name: str) -> bool:
        stmt = select(func.count()).where(
            Instance.account_id == account_id, Instance.name == name, Instance.deleted_at.is_(None)
        )
        return bool(await self.session.scalar(stmt))

    async def template(self, code: str) -> ServiceTemplate | None:
        return await self.session.scalar(
            select(ServiceTemplate).where(ServiceTemplate.code == code, ServiceTemplate.retired_at.is_(None))
        )

    async def templates(self, codes: set[str]) -> list[ServiceTemplate]:
        return list((await self.session.scalars(select(ServiceTemplate).where(ServiceTemplate.code.in_(codes)))).all())

    async def add(self, instance: Instance) -> None:
        self.session.add(instance)
        await self.session.flush()

    async def lock(self, instance_id: uuid.UUID) -> Instance | None:
        return await self.session.scalar(select(Instance).where(Instance.id == instance_id).with_for_update())

    async def by_slug(self, slug: str) -> Instance | None:
        return await self.session.scalar(select(Instance).where(Instance.slug == slug, Instance.deleted_at.is_(None)))

    async def route_by_slug(self, slug: str) -> tuple[uuid.UUID, uuid.UUID, str] | None:
        """(account, instance, observed status) of the live instance with this slug: what the router needs."""
        row = (await self.session.execute(_ROUTE_BY_SLUG, {"slug": slug})).first()
        return (row[0], row[1], row[2]) if row else None

    async def account(self, account_id: uuid.UUID) -> Account | None:
        return await self.session.get(Account, account_id)

    async def accounts_with_expired_before(self, cutoff: datetime) -> list[uuid.UUID]:
        stmt = (
            select(Instance.account_id)
            .where(Instance.deleted_at.is_(None), Instance.expired_at.is_not(None), Instance.expired_at <= cutoff)
            .distinct()
        )
        return list((await self.session.scalars(stmt)).all())


# One instance as `readable()` scopes it, the statement of every instance request, built once.
_READABLE_BY_ID = InstanceRepository.readable(bindparam("user_id")).where(  # type: ignore[arg-type]
    Instance.id == bindparam("instance_id")
)
_ROUTE_BY_SLUG = select(Instance.account_id, Instance.id, Instance.observed_status).where(
    Instance.slug == bindparam("slug"), Instance.deleted_at.is_(None)
)
