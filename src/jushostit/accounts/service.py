"""Accounts, team membership and invites. Never commits."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.accounts.repository import AccountRepository
from jushostit.accounts.schemas import AccountUpdate, InviteCreate
from jushostit.audit import service as audit
from jushostit.billing.repository import BillingRepository
from jushostit.config import Settings
from jushostit.kit.crypto import new_token, token_hash
from jushostit.kit.db import utcnow
from jushostit.kit.email_address import normalize_email
from jushostit.kit.errors import BadRequest, Conflict, Forbidden, NotFound
from jushostit.models import Account, BillingMode, Invite, Membership, Role, User
from jushostit.notifications.service import queue_email


async def create_account(
    session: AsyncSession, *, owner: User, name: str, billing_mode: BillingMode, contract_ref: str | None = None,
    contract_ends_at: datetime | None = None,
) -> Account:
    """A new account owned by `owner`; with a prepaid contract (its CRM deal and end) when one paid for it."""
    account = Account(name=name, billing_email=owner.email, billing_mode=billing_mode, suspension_reasons=[],
                      contract_ref=contract_ref, contract_ends_at=contract_ends_at)
    repository = AccountRepository(session)
    await repository.add(account)
    await repository.add(Membership(account_id=account.id, user_id=owner.id, role=Role.owner))
    contract = {"contract_ref": contract_ref, "contract_ends_at": contract_ends_at.isoformat()} if contract_ends_at else {}
    await audit.record(
        session, action="account.created", target_type="account", target_id=account.id, account_id=account.id,
        after={"name": name, "owner": str(owner.id), "billing_mode": billing_mode.value, **contract},
    )
    return account


async def update_account(session: AsyncSession, *, account: Account, data: AccountUpdate) -> Account:
    changes = data.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is None:
        raise BadRequest("name cannot be null", code="invalid_name")
    if changes.get("billing_email"):
        changes["billing_email"] = normalize_email(changes["billing_email"])
    before = {field: getattr(account, field) for field in changes}
    for field, value in changes.items():
        setattr(account, field, value)
    after = {field: getattr(account, field) for field in changes}
    if before != after:
        await audit.record(session, action="account.updated", target_type="account", target_id=account.id,
                           account_id=account.id, before=before, after=after)
    return account


async def change_role(
    session: AsyncSession, *, account_id: uuid.UUID, acting_role: Role, user_id: uuid.UUID, role: Role
) -> tuple[User, Membership]:
    repository = AccountRepository(session)
    await BillingRepository(session).lock_account(account_id)
    found = await repository.member_for_update(account_id, user_id)
    if found is None:
        raise NotFound("Member not found")
    user, membership = found
    if Role.owner in (role, membership.role) and acting_role != Role.owner:
        raise Forbidden("Only an owner can grant or take away the owner role", code="insufficient_role")
    if membership.role == Role.owner and role != Role.owner and await repository.owner_count(account_id) <= 1:
        raise Conflict("An account must keep at least one owner", code="last_owner")
    before = membership.role
    membership.role = role
    if before != role:
        await audit.record(session, action="member.role_changed", target_type="user", target_id=user_id,
                           account_id=account_id, before={"role": before}, after={"role": role})
    return user, membership


async def remove_member(session: AsyncSession, *, account_id: uuid.UUID, acting: User, acting_role: Role,
                        user_id: uuid.UUID) -> None:
    repository = AccountRepository(session)
    await BillingRepository(session).lock_account(account_id)
    found = await repository.member_for_update(account_id, user_id)
    if found is None:
        raise NotFound("Member not found")
    _, membership = found
    leaving_self = user_id == acting.id
    if not leaving_self and acting_role == Role.member:
        raise Forbidden("Only owners and admins remove members", code="insufficient_role")
    if membership.role == Role.owner and not leaving_self and acting_role != Role.owner:
        raise Forbidden("Only an owner can remove an owner", code="insufficient_role")
    if membership.role == Role.owner and await repository.owner_count(account_id) <= 1:
        raise Conflict("An account must keep at least one owner", code="last_owner")
    await repository.remove_membership(account_id, user_id)
    await audit.record(session, action="member.removed", target_type="user", target_id=user_id,
                       account_id=account_id, before={"role": membership.role})


async def create_invite(
    session: AsyncSession, settings: Settings, *, account: Account, inviter: User, acting_role: Role,
    data: InviteCreate,
) -> Invite:
    email = normalize_email(data.email)
    if data.role == Role.owner and acting_role != Role.owner:
        raise Forbidden("Only an owner can invite an owner", code="insufficient_role")
    repository = AccountRepository(session)
    if await repository.is_member_by_email(account.id, email):
        raise Conflict("That person is already a member", code="already_member")
    token = new_token("jhi-inv_")
    invite = Invite(
        account_id=account.id,
        email=email,
        role=data.role,
        token_hash=token_hash(token),
        invited_by=inviter.id,
        expires_at=utcnow() + timedelta(seconds=settings.invite_ttl_seconds),
    )
    await repository.add(invite)
    await audit.record(session, action="invite.created", target_type="invite", target_id=invite.id,
                       account_id=account.id, after={"email": email, "role": data.role})
    await queue_email(
        session,
        to=email,
        template="invite",
        values={
            "inviter": inviter.email,
            "account_name": account.name,
            "role": data.role.value,
            "days": str(settings.invite_ttl_seconds // 86400),
            "link": f"{settings.base_url}/invites/accept?token={token}",
            "email": email,
        },
    )
    return invite


async def revoke_invite(session: AsyncSession, *, account_id: uuid.UUID, invite_id: uuid.UUID) -> Invite:
    invite = await AccountRepository(session).invite_of(account_id, invite_id)
    if invite is None:
        raise NotFound("Invite not found")
    if invite.accepted_at is not None:
        raise Conflict("The invite was already accepted", code="invite_accepted")
    if invite.revoked_at is None:
        invite.revoked_at = utcnow()
        await audit.record(session, action="invite.revoked", target_type="invite", target_id=invite.id,
                           account_id=account_id)
    return invite


async def open_invite(session: AsyncSession, *, token: str) -> tuple[Invite, Account]:
    """The open invite a token names (locked for this transaction), with its account."""
    repository = AccountRepository(session)
    invite = await repository.open_invite_by_token(token_hash(token), utcnow())
    account = await repository.account(invite.account_id) if invite else None
    if invite is None or account is None:
        raise NotFound("This invite is invalid, expired, revoked or already used", code="invite_invalid")
    return invite, account


async def accept_invite(session: AsyncSession, *, user: User, token: str) -> Invite:
    repository = AccountRepository(session)
    invite = await repository.open_invite_by_token(token_hash(token), utcnow())
    if invite is None:
        raise NotFound("This invite is invalid, expired, revoked or already used", code="invite_invalid")
    if invite.email != user.email:
        raise Forbidden("This invite was sent to another email address", code="invite_email_mismatch")
    await BillingRepository(session).lock_account(invite.account_id)
    if await repository.member_for_update(invite.account_id, user.id) is not None:
        raise Conflict("You are already a member of this account", code="already_member")
    membership = Membership(account_id=invite.account_id, user_id=user.id, role=invite.role)
    await repository.add(membership)
    invite.accepted_at = utcnow()
    user.email_verified = True  # the token reached this mailbox
    await audit.record(session, action="invite.accepted", target_type="invite", target_id=invite.id,
                       account_id=invite.account_id, after={"user_id": str(user.id), "role": invite.role})
    return invite
