from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from jushostit import container
from jushostit.auth import service
from jushostit.auth.dependencies import Principal, check_email_verified, public, require_user
from jushostit.auth.repository import AuthRepository
from jushostit.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPage,
    ApiKeyRead,
    LoginRequest,
    MagicLinkConsume,
    MagicLinkRequest,
    MembershipRead,
    MeRead,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    SignupAccepted,
    SignupRequest,
    TokenPair,
    UserRead,
    VerifyEmailRequest,
)
from jushostit.kit.db import SessionDep
from jushostit.kit.errors import conflicts, responses
from jushostit.kit.pagination import Paging, split_page

router = APIRouter(prefix="/v1", tags=["auth"])

Public = Depends(public())
RateLimited = Depends(public(rate_limit=True))
SignedIn = Annotated[Principal, Depends(require_user(session_only=True))]
AnyUser = Annotated[Principal, Depends(require_user())]


def auth_config() -> service.AuthConfig:
    c = container.current()
    return service.AuthConfig(c.settings, c.jwt_secret)


CORPORATE_SIGNUP_CONFLICTS = {
    "corporate_contracts_not_configured": "`corporate_ref` was sent, but no CRM (HubSpot token) is configured",
    "corporate_ref_not_won": "the deal is open or lost (`details.outcome`)",
    "corporate_ref_without_contract_end": "the won deal has no contract end (`details.property`)",
    "corporate_contract_ended": "the deal's contract has ended already",
    "corporate_ref_used": "the deal already made an account",
}

SIGNUP_ACCEPTED = (
    "Check your e-mail: we sent a link to confirm the address. You can sign in now; checkout, API keys and "
    "invites wait until the address is confirmed."
)


@router.post(
    "/auth/signup",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SignupAccepted,
    dependencies=[RateLimited],
    responses={**responses(400, 413, 422, 429, 503), **conflicts(CORPORATE_SIGNUP_CONFLICTS)},
)
async def signup(body: SignupRequest, session: SessionDep) -> SignupAccepted:
    """Create a user and their account, and e-mail a confirmation link; then sign in with `/v1/auth/login`.
    The answer is the same when the address already has a user (its owner is e-mailed instead).

    With `corporate_ref` (a HubSpot deal id) the account is `prepaid` by that deal's contract: the deal must
    exist (400 `unknown_corporate_ref`), be won and have a contract end still ahead (409, below); 503
    `crm_unavailable` when HubSpot cannot answer now (`Retry-After` when HubSpot said how long)."""
    config = auth_config()
    # HubSpot is asked before the session's first query, so no database transaction is open while it answers.
    contract = await service.corporate_contract(config, body.corporate_ref) if body.corporate_ref else None
    await service.signup(session, config, email=body.email, password=body.password,
                         account_name=body.account_name, contract=contract)
    return SignupAccepted(message=SIGNUP_ACCEPTED)


@router.post("/auth/verify-email", response_model=UserRead, dependencies=[RateLimited],
             responses=responses(401, 422, 429))
async def verify_email(body: VerifyEmailRequest, session: SessionDep) -> UserRead:
    """Confirm the address with the token from the e-mailed link (single use)."""
    return UserRead.model_validate(await service.verify_email(session, token=body.token))


@router.post(
    "/auth/verify-email/resend",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,
    responses=responses(401, 403, 409),
)
async def resend_verification(principal: SignedIn, session: SessionDep) -> Response:
    """E-mail a new confirmation link (at most a few per address per hour)."""
    await service.resend_verification(session, auth_config(), user=principal.user)
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.post(
    "/auth/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,
    dependencies=[RateLimited],
    responses=responses(400, 422, 429),
)
async def request_password_reset(body: PasswordResetRequest, session: SessionDep) -> Response:
    """E-mail a reset link (30 minutes, single use) if the address has a user; the answer is the same if not."""
    await service.request_password_reset(session, auth_config(), email=body.email)
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.post("/auth/password-reset/confirm", response_model=TokenPair, dependencies=[RateLimited],
             responses=responses(400, 401, 422, 429))
async def reset_password(body: PasswordResetConfirm, session: SessionDep) -> TokenPair:
    """Set a new password with the e-mailed token: signs out every session, then signs in. `revoked` says
    what was revoked."""
    return await service.reset_password(session, auth_config(), token=body.token, password=body.password)


@router.post("/auth/login", response_model=TokenPair, dependencies=[RateLimited], responses=responses(401, 422, 429))
async def login(body: LoginRequest, session: SessionDep) -> TokenPair:
    return await service.login(session, auth_config(), email=body.email, password=body.password)


@router.post("/auth/refresh", response_model=TokenPair, dependencies=[RateLimited], responses=responses(401, 422, 429))
async def refresh(body: RefreshRequest, session: SessionDep) -> TokenPair:
    return await service.refresh(session, auth_config(), refresh_token=body.refresh_token)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, responses=responses(401, 403))
async def logout(principal: SignedIn, session: SessionDep) -> Response:
    assert principal.session_id is not None
    await service.logout(session, session_id=principal.session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/auth/magic-link",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,  # an empty 202: documented without a JSON body
    dependencies=[RateLimited],
    responses=responses(400, 422, 429),
)
async def request_magic_link(body: MagicLinkRequest, session: SessionDep) -> Response:
    await service.request_magic_link(session, auth_config(), email=body.email)
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.post(
    "/auth/magic-link/consume", response_model=TokenPair, dependencies=[RateLimited], responses=responses(401, 422, 429)
)
async def consume_magic_link(body: MagicLinkConsume, session: SessionDep) -> TokenPair:
    return await service.consume_magic_link(session, auth_config(), token=body.token)


@router.get("/me", response_model=MeRead, responses=responses(401))
async def me(principal: AnyUser, session: SessionDep) -> MeRead:
    memberships = await AuthRepository(session).memberships_of(principal.user.id)
    return MeRead(
        user=UserRead.model_validate(principal.user),
        memberships=[MembershipRead(account_id=a.id, account_name=a.name, role=role) for a, role in memberships],
    )


@router.post(
    "/me/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated, responses=responses(400, 401, 403, 422)
)
async def create_api_key(body: ApiKeyCreate, principal: SignedIn, session: SessionDep) -> ApiKeyCreated:
    check_email_verified(principal)
    key, plaintext = await service.create_api_key(session, user=principal.user, data=body)
    return ApiKeyCreated(**ApiKeyRead.model_validate(key).model_dump(), key=plaintext)


@router.get("/me/api-keys", response_model=ApiKeyPage, responses=responses(400, 401, 403))
async def list_api_keys(
    principal: SignedIn, session: SessionDep, page: Paging
) -> ApiKeyPage:
    rows = await AuthRepository(session).api_keys_of(principal.user.id, after=page.after_uuid(), limit=page.limit + 1)
    items, cursor = split_page(rows, page, "id")
    return ApiKeyPage(items=[ApiKeyRead.model_validate(k) for k in items], next_cursor=cursor)


@router.delete("/me/api-keys/{key_id}", response_model=ApiKeyRead, responses=responses(401, 403, 404))
async def revoke_api_key(key_id: uuid.UUID, principal: SignedIn, session: SessionDep) -> ApiKeyRead:
    return ApiKeyRead.model_validate(await service.revoke_api_key(session, user=principal.user, key_id=key_id))

