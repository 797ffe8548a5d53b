"""Platform admins register the shared data platforms seats are sold on, list and delete them. An admin API key
goes in once and never comes out."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Response, status

from jushostit import container
from jushostit.auth.dependencies import require_admin
from jushostit.kit.db import SessionDep
from jushostit.kit.errors import ErrorResponse, NotFound, conflicts, responses
from jushostit.platforms import service
from jushostit.platforms.repository import PlatformRepository
from jushostit.platforms.schemas import PlatformCreate, PlatformList, PlatformRead

router = APIRouter(prefix="/v1/admin/platforms", tags=["admin", "platforms"], dependencies=[Depends(require_admin())])

PLATFORM_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "`platform_credentials_refused` (the API key was refused) or "
                                                 "`validation_error`"},
    502: {"model": ErrorResponse, "description": "`platform_unreachable`: the connection test could not use the "
                                                 "platform's admin API; nothing was recorded"},
}


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=PlatformRead,
    responses={**responses(400, 401, 403, 404), **conflicts({"platform_name_taken": "the name is in use"}),
               **PLATFORM_ERRORS},
)
async def register_platform(body: PlatformCreate, session: SessionDep) -> PlatformRead:
    """Register a Hopsworks platform: a connection test with its admin API key runs first (nothing is recorded
    when it fails); the key is stored encrypted and never returned. A `cluster` that is not registered is a 404
    `cluster_not_found`. Audited."""
    current = container.current()
    platform = await service.register(session, current.secret_box, data=body,
                                      timeout=current.settings.platform_timeout_seconds,
                                      sign_in_providers=current.settings.oidc_providers.keys())
    return PlatformRead.model_validate(platform)


@router.get("", response_model=PlatformList, responses=responses(401, 403))
async def list_platforms(session: SessionDep) -> PlatformList:
    return PlatformList(items=[PlatformRead.model_validate(p) for p in await PlatformRepository(session).all()])


@router.get("/{platform_id}", response_model=PlatformRead, responses=responses(401, 403, 404))
async def get_platform(platform_id: uuid.UUID, session: SessionDep) -> PlatformRead:
    platform = await PlatformRepository(session).by_id(platform_id)
    if platform is None:
        raise NotFound("Platform not found", code="platform_not_found")
    return PlatformRead.model_validate(platform)


@router.delete("/{platform_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={**responses(401, 403, 404),
                          **conflicts({"platform_in_use": "seats are still held on it: delete them first"})})
async def delete_platform(platform_id: uuid.UUID, session: SessionDep) -> Response:
    """Forget a platform and its API key (audited), once no seat is held on it (409 `platform_in_use`)."""
    await service.delete(session, platform_id=platform_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
