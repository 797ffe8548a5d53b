"""Every query of accounts, memberships and invites. Tenant scoping for these tables lives here."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.models import Account, Invite, Membership, Role, User


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *objects: object) -> None:
        self.session.add_all(objects)
        await self.session.flush()

    async def contract_taken(self, contract_ref: str) -> bool:
        """Whether an account was already made with this contract (a CRM deal makes one account)."""
        return bool(await self.session.scalar(select(exists().where(Account.contract_ref == contract_ref))))

    async def members(self, account_id: uuid.UUID, *, after: uuid.UUID | None, limit: int) -> list[tuple[User, Membership]]:
        stmt = (
            select(User, Membership)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.account_id == account_id)
            .order_by(User.id)
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(User.id > after)
        return [(u, m) for u, m in (await self.session.execute(stmt)).all()]

    async def member_for_update(self, account_id: uuid.UUID, user_id: uuid.UUID) -> tuple[User, Membership] | None:
        row = (
            await self.session.execute(
                select(User, Membership)
                .join(Membership, Membership.user_id == User.id)
                .where(Membership.account_id == account_id, Membership.user_id == user_id)
                .with_for_update(of=Membership)
            )
        ).first()
        return (row[0], row[1]) if row else None

    async def owner_count(self, account_id: uuid.UUID) -> int:
        return int(
            await self.session.scalar(
                select(func.count()).where(Membership.account_id == account_id, Membership.role == Role.owner)
            )
            or 0
        )

    async def remove_membership(self, account_id: uuid.UUID, user_id: uuid.UUID) -> None:
        await self.session.execute(
            delete(Membership).where(Membership.account_id == account_id, Membership.user_id == user_id)
        )

    async def is_member_by_email(self, account_id: uuid.UUID, email: str) -> bool:
        stmt = (
            select(Membership.user_id)
            .join(User, User.id == Membership.user_id)
            .where(Membership.account_id == account_id, User.email == email)
        )
        return await self.session.scalar(stmt) is not None

    async def invites(self, account_id: uuid.UUID, *, after: uuid.UUID | None, limit: int) -> list[Invite]:
        stmt = select(Invite).where(Invite.account_id == account_id).order_by(Invite.id).limit(limit)
        if after is not None:
            stmt = stmt.where(Invite.id > after)
        return list((await self.session.scalars(stmt)).all())

    async def invite_of(self, account_id: uuid.UUID, invite_id: uuid.UUID) -> Invite | None:
        return await self.session.scalar(
            select(Invite).where(Invite.account_id == account_id, Invite.id == invite_id).with_for_update()
        )

    async def account(self, account_id: uuid.UUID) -> Account | None:
        return await self.session.get(Account, account_id)

    async def open_invite_by_token(self, hashed: str, now: datetime) -> Invite | None:
        return await self.session.scalar(
            select(Invite)
            .where(
                Invite.token_hash == hashed,
                Invite.accepted_at.is_(None),
                Invite.revoked_at.is_(None),
                Invite.expires_at > now,
            )
            .with_for_update()
        )
