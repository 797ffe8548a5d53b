from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

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
from jushostit.idempotency import IdempotencyDep
from jushostit.instances import service
from jushostit.instances.repository import InstanceRepository
from jushostit.instances.schemas import (
    Credential,
    Credentials,
    DeleteWhen,
    InstanceCreate,
    InstancePage,
    InstanceRead,
    LogLines,
)
from jushostit.kit.db import SessionDep, read_only
from jushostit.kit.errors import NotFound, responses
from jushostit.kit.pagination import PageParams, page_params, split_page
from jushostit.models import Account, Instance, Role
from jushostit.runtime.registry import driver_for, instance_address

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
InstanceSecrets = Annotated[InstanceAccess, Depends(require_instance(Scope.instances_secrets, Role.admin))]
AccountInstancesReader = Annotated[AccountAccess, Depends(require_account(Scope.instances_read))]
AccountInstancesWriter = Annotated[AccountAccess, Depends(require_account(Scope.instances_write))]


# Runtime errors can name hosts, paths and cluster objects: customers get this note, admins the error.
CUSTOMER_ERROR_NOTE = "The platform could not apply the last change to this service; it retries automatically."


def instance_read(instance: Instance) -> InstanceRead:
    url, _ = instance_address(container.current().settings, instance.slug)
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
        return instance_read(await service.order(session, c.settings, c.secret_box, account=access.account, data=body))

    return await idempotency.run(
        session, principal_id=access.principal.user.id, body=body, status_code=201, action=place_order
    )


@router.get("/accounts/{account_id}/instances", response_model=InstancePage, responses=responses(400, 401, 403, 404))
@read_only
async def list_instances(
    access: AccountInstancesReader, session: SessionDep, page: Annotated[PageParams, Depends(page_params)]
) -> InstancePage:
    rows = await InstanceRepository(session).of_account(access.account.id, after=page.after_uuid(), limit=page.limit + 1)
    items, cursor = split_page(rows, page, "id")
    return InstancePage(items=[instance_read(i) for i in items], next_cursor=cursor)


@router.get("/instances/{instance_id}", response_model=InstanceRead, responses=responses(401, 403, 404))
@read_only
async def get_instance(access: InstanceReader) -> InstanceRead:
    return instance_read(access.instance)


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
    return instance_read(instance)


@router.post(
    "/instances/{instance_id}/restart",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=InstanceRead,
    responses=responses(401, 403, 404, 409),
)
async def restart_instance(access: InstanceWriter, session: SessionDep) -> InstanceRead:
    await service.request_restart(session, instance=access.instance)
    return instance_read(access.instance)


@router.get("/instances/{instance_id}/logs", response_model=LogLines, responses=responses(401, 403, 404, 422))
@read_only
async def instance_logs(access: InstanceReader, tail: Annotated[int, Query(ge=1, le=5000)] = 200) -> LogLines:
    lines = await driver_for(container.current().settings).logs(access.instance.id, tail)
    return LogLines(lines=lines)


@router.get("/instances/{instance_id}/credentials", response_model=Credentials, responses=responses(401, 403, 404))
async def instance_credentials(access: InstanceSecrets, session: SessionDep) -> Credentials:
    """Generated secrets of the instance; owners and admins of the account only."""
    values = await service.credentials(session, container.current().secret_box, instance=access.instance)
    url, _ = instance_address(container.current().settings, access.instance.slug)
    return Credentials(url=url, values=[Credential(name=n, value=v) for n, v in values])
