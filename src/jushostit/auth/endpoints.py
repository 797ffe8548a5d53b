from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from jushostit import container
from jushostit.accounts.schemas import AccountRead
from jushostit.auth import service
from jushostit.auth.dependencies import Principal, public, require_user
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
    RefreshRequest,
    SignupRequest,
    TokenPair,
    UserRead,
)
from jushostit.kit.db import SessionDep
from jushostit.kit.errors import responses
from jushostit.kit.pagination import PageParams, page_params, split_page
from jushostit.kit.schemas import ResponseModel
from jushostit.models import Role

router = APIRouter(prefix="/v1", tags=["auth"])

Public = Depends(public())
RateLimited = Depends(public(rate_limit=True))
SignedIn = Annotated[Principal, Depends(require_user(session_only=True))]
AnyUser = Annotated[Principal, Depends(require_user())]


def auth_config() -> service.AuthConfig:
    c = container.current()
    return service.AuthConfig(c.settings, c.jwt_secret)


class SignupResponse(ResponseModel):
    user: UserRead
    account: AccountRead
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


@router.post(
    "/auth/signup",
    status_code=status.HTTP_201_CREATED,
    response_model=SignupResponse,
    dependencies=[RateLimited],
    responses=responses(400, 409, 413, 422, 429),
)
async def signup(body: SignupRequest, session: SessionDep) -> SignupResponse:
    user, account, tokens = await service.signup(
        session, auth_config(), email=body.email, password=body.password, account_name=body.account_name
    )
    return SignupResponse(
        user=UserRead.model_validate(user),
        account=AccountRead(
            id=account.id, name=account.name, status=account.status, suspension_reasons=account.suspension_reasons,
            role=Role.owner, created_at=account.created_at,
            billing={"billing_mode": account.billing_mode, "billing_email": account.billing_email},
        ),
        **tokens.model_dump(),
    )


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
    key, plaintext = await service.create_api_key(session, user=principal.user, data=body)
    return ApiKeyCreated(**ApiKeyRead.model_validate(key).model_dump(), key=plaintext)


@router.get("/me/api-keys", response_model=ApiKeyPage, responses=responses(400, 401, 403))
async def list_api_keys(
    principal: SignedIn, session: SessionDep, page: Annotated[PageParams, Depends(page_params)]
) -> ApiKeyPage:
    rows = await AuthRepository(session).api_keys_of(principal.user.id, after=page.after_uuid(), limit=page.limit + 1)
    items, cursor = split_page(rows, page, "id")
    return ApiKeyPage(items=[ApiKeyRead.model_validate(k) for k in items], next_cursor=cursor)


@router.delete("/me/api-keys/{key_id}", response_model=ApiKeyRead, responses=responses(401, 403, 404))
async def revoke_api_key(key_id: uuid.UUID, principal: SignedIn, session: SessionDep) -> ApiKeyRead:
    return ApiKeyRead.model_validate(await service.revoke_api_key(session, user=principal.user, key_id=key_id))

