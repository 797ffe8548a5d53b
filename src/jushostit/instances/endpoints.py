from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit import container
from jushostit.auth.dependencies import (
    AccountAccess,
    AuthRule,
    Principal,
    authenticated,
    check_account_access,
    declare_rule,
    require_account,
)
from jushostit.auth.scopes import Scope
from jushostit.config import Settings
from jushostit.idempotency import IdempotencyDep
from jushostit.instances import service
from jushostit.instances.repository import InstanceRepository
from jushostit.instances.schemas import (
    Credential,
    Credentials,
    DeleteWhen,
    FileWritten,
    InstanceCreate,
    InstancePage,
    InstanceRead,
    LogLines,
)
from jushostit.kit.db import SessionDep, read_only
from jushostit.kit.errors import Conflict, Forbidden, NotFound, responses
from jushostit.kit.pagination import Paging, split_page
from jushostit.models import Account, Instance, Role
from jushostit.platforms.repository import SeatRepository
from jushostit.runtime.registry import addresses, driver_for, local_driver

router = APIRouter(prefix="/v1", tags=["instances"])


@dataclass(frozen=True)
class InstanceAccess:
    principal: Principal
    instance: Instance
    account: Account
    role: Role


def require_instance(scope: Scope, min_role: Role = Role.member):  # noqa: ANN201 - a FastAPI dependency
    """A member of the instance's account; anyone else gets 404, as if it did not exist."""

    async def dependency(request: Request, session: SessionDep, instance_id: uuid.UUID) -> InstanceAccess:
        principal = await authenticated(request, session)
        found = await InstanceRepository(session).readable_by(principal.user.id, instance_id)
        if found is None:
            raise NotFound("Instance not found")
        instance, account, role = found
        check_account_access(principal, role, scope, min_role)
        return InstanceAccess(principal, instance, account, role)

    return declare_rule(dependency, AuthRule.account)


InstanceReader = Annotated[InstanceAccess, Depends(require_instance(Scope.instances_read))]
InstanceWriter = Annotated[InstanceAccess, Depends(require_instance(Scope.instances_write))]
# Owners and admins; a seat's holder for their own seat (checked by the route).
InstanceSecrets = Annotated[InstanceAccess, Depends(require_instance(Scope.instances_secrets))]
# Longer paths than the service accepts (1,024) are refused by it with 422 `invalid_path`, naming the rule.
FilePath = Annotated[str, PathParam(max_length=4096)]
DEFAULT_MAX_BODY_BYTES = Settings.model_fields["max_body_bytes"].default
InstanceFilesWriter = Annotated[InstanceAccess, Depends(require_instance(Scope.instances_write, Role.admin))]
AccountInstancesReader = Annotated[AccountAccess, Depends(require_account(Scope.instances_read))]
AccountInstancesWriter = Annotated[AccountAccess, Depends(require_account(Scope.instances_write))]


# Runtime errors can name hosts, paths and cluster objects: customers get this note, admins the error.
CUSTOMER_ERROR_NOTE = "The platform could not apply the last change to this service; it retries automatically."


async def instance_reads(session: AsyncSession, instances: list[Instance]) -> list[InstanceRead]:
    """Each with its URL as its runtime serves it (on Kubernetes, one read of the accounts' clusters); a seat's is
    its platform's."""
    book = await addresses(session, container.current().settings, list({i.account_id for i in instances}))
    # Seats are ordered at the seat tier: reading other instances asks nothing more of the database.
    seats = await SeatRepository(session).platform_urls([i.id for i in instances if i.tier == service.SEAT_TIER])
    return [instance_read(instance, seats.get(instance.id) or book.of(instance.account_id, instance.slug)[0])
            for instance in instances]


async def one_instance_read(session: AsyncSession, instance: Instance) -> InstanceRead:
    [read] = await instance_reads(session, [instance])
    return read


def instance_read(instance: Instance, url: str) -> InstanceRead:
    return InstanceRead(
        id=instance.id,
        account_id=instance.account_id,
        template=instance.template_code,
        name=instance.name,
        slug=instance.slug,
        tier=instance.tier,
        url=url,
        status=instance.observed_status,
        status_reason=instance.status_reason,
        desired_level=instance.desired_level,
        last_error=CUSTOMER_ERROR_NOTE if instance.last_error else None,
        last_reconciled_at=instance.last_reconciled_at,
        delete_requested_at=instance.delete_requested_at,
        expired_at=instance.expired_at,
        created_at=instance.created_at,
    )


@router.post(
    "/accounts/{account_id}/instances",
    status_code=status.HTTP_201_CREATED,
    response_model=InstanceRead,
    responses=responses(400, 401, 403, 404, 409, 422),
)
async def order_instance(
    body: InstanceCreate, access: AccountInstancesWriter, session: SessionDep, idempotency: IdempotencyDep
) -> Response:
    """Order a service; the reconciler provisions it. Honours `Idempotency-Key` (a retry orders nothing twice)."""
    c = container.current()

    async def place_order() -> InstanceRead:
        ordered = await service.order(session, c.settings, c.secret_box, account=access.account, role=access.role,
                                      data=body)
        return await one_instance_read(session, ordered)

    return await idempotency.run(
        session, principal_id=access.principal.user.id, body=body, status_code=201, action=place_order
    )


@router.get("/accounts/{account_id}/instances", response_model=InstancePage, responses=responses(400, 401, 403, 404))
@read_only
async def list_instances(
    access: AccountInstancesReader, session: SessionDep, page: Paging
) -> InstancePage:
    rows = await InstanceRepository(session).of_account(access.account.id, after=page.after_uuid(), limit=page.limit + 1)
    items, cursor = split_page(rows, page, "id")
    return InstancePage(items=await instance_reads(session, items), next_cursor=cursor)


@router.get("/instances/{instance_id}", response_model=InstanceRead, responses=responses(401, 403, 404))
@read_only
async def get_instance(access: InstanceReader, session: SessionDep) -> InstanceRead:
    return await one_instance_read(session, access.instance)


@router.delete(
    "/instances/{instance_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=InstanceRead,
    responses=responses(401, 403, 404, 422),
)
async def delete_instance(
    access: InstanceWriter, session: SessionDep, at: Annotated[DeleteWhen, Query()] = "now"
) -> InstanceRead:
    """Delete the workload and its data, now or at the end of the paid period."""
    instance = await service.request_delete(session, instance_id=access.instance.id, when=at)
    return await one_instance_read(session, instance)


@router.post(
    "/instances/{instance_id}/restart",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=InstanceRead,
    responses=responses(401, 403, 404, 409),
)
async def restart_instance(access: InstanceWriter, session: SessionDep) -> InstanceRead:
    await service.request_restart(session, instance=access.instance)
    return await one_instance_read(session, access.instance)


@router.get("/instances/{instance_id}/logs", response_model=LogLines, responses=responses(401, 403, 404, 422))
@read_only
async def instance_logs(access: InstanceReader, tail: Annotated[int, Query(ge=1, le=5000)] = 200) -> LogLines:
    c = container.current()
    lines = await driver_for(c.settings, c.database, c.secret_box).logs(access.instance.id, tail)
    return LogLines(lines=lines)


@router.get("/instances/{instance_id}/credentials", response_model=Credentials, responses=responses(401, 403, 404))
async def instance_credentials(access: InstanceSecrets, session: SessionDep) -> Credentials:
    """Generated secrets of the instance; owners and admins of the account only. A seat's are its platform
    username and its initial password, shown once (then forgotten), to owners, admins and the seat's holder."""
    if not await service.may_read_credentials(session, instance=access.instance, user_id=access.principal.user.id,
                                              role=access.role):
        raise Forbidden("This needs the admin role in the account", code="insufficient_role")
    values = await service.credentials(session, container.current().secret_box, instance=access.instance)
    return Credentials(url=(await one_instance_read(session, access.instance)).url,
                       values=[Credential(name=n, value=v) for n, v in values])


@router.put(
    "/instances/{instance_id}/files/{path:path}",
    response_model=FileWritten,
    responses={**responses(401, 403, 404, 409, 413, 422), 201: {"model": FileWritten, "description": "Created"}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
        "schema": {"type": "string", "format": "binary", "maxLength": DEFAULT_MAX_BODY_BYTES,
                   "description": "The file's content; at most JUSHOSTIT_MAX_BODY_BYTES (1 MiB by default)"}}}}},
)
async def put_file(access: InstanceFilesWriter, path: FilePath, request: Request, session: SessionDep) -> Response:
    """Upload one file of a site that serves files (static-site): the raw body is the file's content, `path` where
    it goes under the site's root (served at `/<path>`; folders are created). 201 when new, 200 when replaced.
    Owners and admins of the account (`instances:write`); at most JUSHOSTIT_MAX_BODY_BYTES (413 beyond)."""
    content = await request.body()
    settings = container.current().settings
    if settings.runtime != "local":  # the site's files live in its volume on the cluster, not here
        raise Conflict("Uploading files is supported on the local runtime only", code="files_not_supported")
    root = local_driver(settings).instance_dir(access.instance.account_id, access.instance.id) / "data"
    relative, created = await service.write_file(session, instance=access.instance, site_root=root, path=path,
                                                 content=content)
    written = FileWritten(path=relative, size=len(content), created=created)
    return JSONResponse(written.model_dump(mode="json"), status_code=201 if created else 200)
