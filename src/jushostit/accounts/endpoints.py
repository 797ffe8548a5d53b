from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit import container
from jushostit.accounts import service
from jushostit.accounts.repository import AccountRepository
from jushostit.accounts.schemas import (
    AccountBilling,
    AccountEntitlement,
    AccountRead,
    AccountUpdate,
    EntitlementQuotas,
    InviteAccept,
    InviteCreate,
    InvitePage,
    InviteRead,
    MemberPage,
    MemberRead,
    MemberUpdate,
)
from jushostit.auth.dependencies import (
    AccountAccess,
    Principal,
    check_email_verified,
    require_account,
    require_user,
)
from jushostit.auth.scopes import Scope
from jushostit.billing.facts import load_entitlement_inputs
from jushostit.kit.db import SessionDep, utcnow
from jushostit.kit.errors import responses
from jushostit.kit.pagination import Paging, split_page
from jushostit.models import Role

router = APIRouter(prefix="/v1", tags=["accounts"])

AccountReader = Annotated[AccountAccess, Depends(require_account(Scope.account_read))]
AccountManager = Annotated[AccountAccess, Depends(require_account(Scope.account_write, Role.admin))]
MembersReader = Annotated[AccountAccess, Depends(require_account(Scope.members_read))]
MembersWriter = Annotated[AccountAccess, Depends(require_account(Scope.members_write))]
MembersManager = Annotated[AccountAccess, Depends(require_account(Scope.members_write, Role.admin))]
SignedIn = Annotated[Principal, Depends(require_user(session_only=True))]


async def account_read(access: AccountAccess, session: AsyncSession) -> AccountRead:
    account, now = access.account, utcnow()
    inputs = await load_entitlement_inputs(
        session, account, now=now, expired_retention_days=container.current().settings.expired_retention_days
    )
    entitled = inputs.decide(now)
    return AccountRead(
        id=account.id,
        name=account.name,
        status=entitled.account_status,  # from the facts now, never a stale stored value
        suspension_reasons=account.suspension_reasons,
        role=access.role,
        created_at=account.created_at,
        billing=AccountBilling(
            billing_mode=account.billing_mode, billing_email=account.billing_email,
            contract_ref=account.contract_ref, contract_ends_at=account.contract_ends_at,
            budget_minor=account.budget_minor, budget_currency=account.budget_currency,
            month_spend_minor=inputs.budget.spent_minor,
        ) if access.can_see_billing else None,
        entitlement=AccountEntitlement(
            level=entitled.level.name,
            reasons=list(entitled.reasons),
            warning_banner=entitled.warning_banner,
            access=entitled.access.value,
            holds=sorted(entitled.holds),
            quotas=EntitlementQuotas.model_validate(entitled.quotas),
        ),
    )


@router.get("/accounts/{account_id}", response_model=AccountRead, responses=responses(401, 403, 404))
async def get_account(access: AccountReader, session: SessionDep) -> AccountRead:
    return await account_read(access, session)


@router.patch("/accounts/{account_id}", response_model=AccountRead, responses=responses(400, 401, 403, 404, 422))
async def update_account(body: AccountUpdate, access: AccountManager, session: SessionDep) -> AccountRead:
    await service.update_account(session, account=access.account, data=body)
    return await account_read(access, session)


@router.get("/accounts/{account_id}/members", response_model=MemberPage, responses=responses(400, 401, 403, 404))
async def list_members(access: MembersReader, session: SessionDep, page: Paging) -> MemberPage:
    rows = await AccountRepository(session).members(access.account.id, after=page.after_uuid(), limit=page.limit + 1)
    items, cursor = split_page([user for user, _ in rows], page, "id")
    roles = {user.id: membership for user, membership in rows}
    return MemberPage(
        items=[
            MemberRead(user_id=u.id, email=u.email, role=roles[u.id].role, joined_at=roles[u.id].created_at)
            for u in items
        ],
        next_cursor=cursor,
    )


@router.patch(
    "/accounts/{account_id}/members/{user_id}", response_model=MemberRead, responses=responses(401, 403, 404, 409, 422)
)
async def change_member_role(
    user_id: uuid.UUID, body: MemberUpdate, access: MembersManager, session: SessionDep
) -> MemberRead:
    user, membership = await service.change_role(
        session, account_id=access.account.id, acting_role=access.role, user_id=user_id, role=body.role
    )
    return MemberRead(user_id=user.id, email=user.email, role=membership.role, joined_at=membership.created_at)


@router.delete(
    "/accounts/{account_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(401, 403, 404, 409),
)
async def remove_member(user_id: uuid.UUID, access: MembersWriter, session: SessionDep) -> Response:
    await service.remove_member(
        session, account_id=access.account.id, acting=access.principal.user, acting_role=access.role, user_id=user_id
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/accounts/{account_id}/invites",
    status_code=status.HTTP_201_CREATED,
    response_model=InviteRead,
    responses=responses(400, 401, 403, 404, 409, 422),
)
async def create_invite(body: InviteCreate, access: MembersManager, session: SessionDep) -> InviteRead:
    check_email_verified(access.principal)
    invite = await service.create_invite(
        session,
        container.current().settings,
        account=access.account,
        inviter=access.principal.user,
        acting_role=access.role,
        data=body,
    )
    return InviteRead.model_validate(invite)


@router.get("/accounts/{account_id}/invites", response_model=InvitePage, responses=responses(400, 401, 403, 404))
async def list_invites(access: MembersManager, session: SessionDep, page: Paging) -> InvitePage:
    rows = await AccountRepository(session).invites(access.account.id, after=page.after_uuid(), limit=page.limit + 1)
    items, cursor = split_page(rows, page, "id")
    return InvitePage(items=[InviteRead.model_validate(i) for i in items], next_cursor=cursor)


@router.delete(
    "/accounts/{account_id}/invites/{invite_id}", response_model=InviteRead, responses=responses(401, 403, 404, 409)
)
async def revoke_invite(invite_id: uuid.UUID, access: MembersManager, session: SessionDep) -> InviteRead:
    return InviteRead.model_validate(
        await service.revoke_invite(session, account_id=access.account.id, invite_id=invite_id)
    )


@router.post("/invites/accept", response_model=InviteRead, responses=responses(401, 403, 404, 409, 422))
async def accept_invite(body: InviteAccept, principal: SignedIn, session: SessionDep) -> InviteRead:
    return InviteRead.model_validate(await service.accept_invite(session, user=principal.user, token=body.token))
