"""Ordering, deleting and restarting instances. Facts only: the reconciler makes them real. Never commits."""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit
from jushostit.billing.facts import instance_facts, load_entitlement_inputs
from jushostit.billing.repository import BillingRepository
from jushostit.catalog.availability import unavailable_reason
from jushostit.catalog.spec import SeatTemplateSpec, TemplateSpec, parse_template
from jushostit.clusters import service as clusters
from jushostit.clusters.placement import template_pods
from jushostit.config import Settings
from jushostit.entitlement import Quotas
from jushostit.instances.repository import InstanceRepository
from jushostit.instances.schemas import DeleteWhen, InstanceCreate
from jushostit.kit import jobs
from jushostit.kit.crypto import SecretBox
from jushostit.kit.db import utcnow
from jushostit.kit.errors import AppError, BadRequest, Conflict, Forbidden, NotFound
from jushostit.models import Account, Instance, Role, Seat
from jushostit.notifications.service import queue_email
from jushostit.platforms import service as platforms
from jushostit.platforms.repository import PlatformRepository, SeatRepository
from jushostit.runtime.registry import KUBERNETES, addresses
from jushostit.runtime.seats import PASSWORD, SEAT_SECRETS
from jushostit.triggers import request_reconcile
from jushostit.vault import service as vault

RESTART_TASK = "instance.restart"


def usage(instances: list[tuple[TemplateSpec | None, str]]) -> Quotas:
    """What a set of (template, tier) instances takes from the plan's quotas (limits, volumes, count). An
    instance whose template (or tier) can no longer be read counts as an instance with no resources: it is
    `failed` and must not turn every later order into an error."""
    total = Quotas(max_instances=len(instances))
    for template, tier in instances:
        resources = template.tiers.get(tier) if template is not None else None
        if template is None or resources is None:
            continue
        storage = sum(v.size_gib for v in template.volumes) + (template.database.size_gib if template.database else 0)
        total = total + Quotas(resources.cpu_limit_millicores, resources.memory_limit_mib, storage, 0)
    return total


def quota_problem(used: Quotas, quotas: Quotas) -> str | None:
    for field, label in (("max_instances", "instances"), ("cpu_millicores", "CPU (millicores)"),
                         ("memory_mib", "memory (MiB)"), ("storage_gib", "storage (GiB)")):
        if getattr(used, field) > getattr(quotas, field):
            return f"plan quota exceeded: {label} {getattr(used, field)} > {getattr(quotas, field)}"
    return None


def readable_template(spec: object) -> TemplateSpec | None:
    try:
        return TemplateSpec.model_validate(spec)
    except ValidationError:
        return None


async def order(
    session: AsyncSession, settings: Settings, box: SecretBox, *, account: Account, role: Role, data: InstanceCreate
) -> Instance:
    repository = InstanceRepository(session)
    template_row = await repository.template(data.template)
    if template_row is None:
        raise NotFound(f"Unknown template {data.template!r}", code="unknown_template")
    try:
        template = parse_template(template_row.spec)
    except ValidationError:
        raise Conflict(f"The template {data.template!r} is unavailable", code="template_unavailable") from None
    if isinstance(template, SeatTemplateSpec):
        return await _order_seat(session, settings, box, account=account, role=role, template=template, data=data)
    if data.member is not None:
        raise BadRequest("Only a seat is ordered for a member", code="member_not_applicable")
    unavailable = unavailable_reason(template, settings.runtime)
    if unavailable is not None:  # refused before anything is created or counted against the quota
        raise Conflict(f"The template {data.template!r} cannot run on this server: {unavailable}",
                       code="template_unavailable", details={"reason": unavailable})
    tier = data.tier or template.default_tier
    if tier not in template.tiers:
        raise BadRequest(f"Unknown tier {tier!r}; choose one of {sorted(template.tiers)}", code="unknown_tier")

    account = await _admit(session, settings, account=account, name=data.name, template=template, tier=tier)

    # On Kubernetes the instance goes to its account's cluster (an account's first order places it), or nowhere:
    # 409 `no_capacity` with the reason (no cluster registered, none fits).
    cluster_id = None
    if settings.runtime == KUBERNETES:
        cluster_id = await clusters.place_instance(session, account_id=account.id, pods=template_pods(template, tier))

    instance = Instance(
        account_id=account.id,
        template_code=template.code,
        name=data.name,
        slug=f"{data.name}-{secrets.token_hex(3)}",
        tier=tier,
        desired_level="running",
        observed_status="provisioning",
    )
    await repository.add(instance)
    if cluster_id is not None:  # its public host, one instance's per cluster
        _, host = (await addresses(session, settings, [account.id])).of(account.id, instance.slug)
        await clusters.claim_host(session, cluster_id=cluster_id, host=host, instance_id=instance.id)
    for var in template.env:
        if var.generate is not None:
            await vault.put(session, box, owner_type="instance", owner_id=instance.id, name=var.name,
                            value=var.generate.new_value())
    await audit.record(session, action="instance.ordered", target_type="instance", target_id=instance.id,
                       account_id=account.id, after={"template": template.code, "name": data.name, "tier": tier})
    request_reconcile(account.id)
    return instance


async def _admit(session: AsyncSession, settings: Settings, *, account: Account, name: str,
                 template: TemplateSpec | None, tier: str) -> Account:
    """One order of an account at a time, on its freshly read row (concurrent orders would otherwise all pass the
    checks before any of them is committed): entitled to order, the name free, the plan's quotas kept (a seat
    counts as an instance that takes no resources). Returns the locked account."""
    repository = InstanceRepository(session)
    account = await BillingRepository(session).lock_account(account.id) or account
    existing = await repository.counting_toward_quota(account.id, utcnow())
    now = utcnow()
    facts = await load_entitlement_inputs(session, account, now=now,
                                          expired_retention_days=settings.expired_retention_days)
    entitled = facts.decide(now, instance_facts(existing))
    if not entitled.can_order:
        raise Conflict("Ordering is not allowed: " + ("; ".join(entitled.reasons) or entitled.access),
                       code="not_entitled", details={"level": entitled.level.name, "reasons": list(entitled.reasons)})
    if await repository.name_taken(account.id, name):
        raise Conflict(f"An instance named {name!r} already exists in this account", code="duplicate_name")
    specs = {t.code: readable_template(t.spec) for t in await repository.templates({i.template_code for i in existing})}
    used = usage([(specs.get(i.template_code), i.tier) for i in existing] + [(template, tier)])
    problem = quota_problem(used, entitled.quotas)
    if problem:
        raise Conflict(problem, code="quota_exceeded", details={"quotas": entitled.quotas.__dict__, "after_order": used.__dict__})
    return account


SEAT_TIER = "seat"


async def _order_seat(session: AsyncSession, settings: Settings, box: SecretBox, *, account: Account, role: Role,
                      template: SeatTemplateSpec, data: InstanceCreate) -> Instance:
    """A seat for a member of the account, on the template's platform, under an email no platform user has yet:
    a user we did not create is never taken over (409 `platform_user_exists`)."""
    if role not in {Role.owner, Role.admin}:
        raise Forbidden("Ordering a seat needs the owner or admin role", code="insufficient_role")
    if data.member is None:
        raise BadRequest("A seat is for a member of the account: name them in `member` (their user id)",
                         code="member_required")
    if data.tier not in {None, SEAT_TIER}:
        raise BadRequest("A seat has no tiers; leave `tier` out", code="unknown_tier")
    repository = InstanceRepository(session)
    member = await repository.member(account.id, data.member)
    if member is None:
        raise NotFound("No such member in this account", code="member_not_found")
    platform = await PlatformRepository(session).by_name(template.platform)
    if platform is None:
        raise Conflict(f"The seat's platform {template.platform!r} is not registered", code="template_unavailable",
                       details={"reason": "platform not registered"})
    seats = SeatRepository(session)
    if await seats.email_held(platform.id, member.email):
        raise Conflict(f"{member.email} already has a seat on {platform.name!r}", code="seat_exists")
    # Asked before the account is locked: a slow platform holds up nothing else of the account.
    connection = await platforms.connection(session, box, platform)
    if await platforms.user_exists(connection, member.email, timeout=settings.platform_timeout_seconds):
        raise Conflict(f"{member.email} already belongs to a user on {platform.name!r} that JusHostIt did not "
                       "create; it is never taken over", code="platform_user_exists")
    account = await _admit(session, settings, account=account, name=data.name, template=None, tier=SEAT_TIER)
    if await seats.email_held(platform.id, member.email):  # ordered meanwhile, now that the account is locked
        raise Conflict(f"{member.email} already has a seat on {platform.name!r}", code="seat_exists")
    # On an enterprise platform that trusts our sign-in provider, a holder who signed in through it gets a remote
    # user linked by their subject; anyone else a local user with a password.
    subject = (await repository.sign_in_subject(member.id, platform.oidc_provider)
               if platform.oidc_provider is not None else None)
    instance = Instance(account_id=account.id, template_code=template.code, name=data.name,
                        slug=f"{data.name}-{secrets.token_hex(3)}", tier=SEAT_TIER, desired_level="running",
                        observed_status="provisioning")
    await repository.add(instance)
    await seats.add(Seat(instance_id=instance.id, platform_id=platform.id, user_id=member.id, email=member.email,
                         remote_subject=subject))
    await audit.record(session, action="instance.ordered", target_type="instance", target_id=instance.id,
                       account_id=account.id, after={"template": template.code, "name": data.name,
                                                     "seat_for": str(member.id), "platform": platform.name,
                                                     "remote_user": subject is not None})
    request_reconcile(account.id)
    return instance


async def request_delete(session: AsyncSession, *, instance_id: uuid.UUID, when: DeleteWhen) -> Instance:
    repository = InstanceRepository(session)
    instance = await repository.lock(instance_id)
    if instance is None:
        raise NotFound("Instance not found")
    now = utcnow()
    at = now
    if when == "period_end":
        subscriptions = await BillingRepository(session).all_of(instance.account_id)
        ends = [s.current_period_end for s, _ in subscriptions if s.status == "active" and s.current_period_end > now]
        at = max(ends) if ends else now
    if instance.delete_requested_at is None or at < instance.delete_requested_at:
        instance.delete_requested_at = at
        await audit.record(session, action="instance.delete_requested", target_type="instance", target_id=instance.id,
                           account_id=instance.account_id, after={"at": at.isoformat(), "when": when})
    request_reconcile(instance.account_id)
    return instance


async def request_restart(session: AsyncSession, *, instance: Instance) -> None:
    if await SeatRepository(session).of_instances([instance.id]):
        raise Conflict("A seat has no process to restart", code="not_restartable")
    if instance.observed_status not in {"running", "throttled", "failed", "provisioning"}:
        raise Conflict(f"Cannot restart an instance that is {instance.observed_status}", code="not_running")
    await audit.record(session, action="instance.restart_requested", target_type="instance", target_id=instance.id,
                       account_id=instance.account_id)
    # The task takes the account's reconcile lock: a restart never races an apply.
    jobs.enqueue(RESTART_TASK, instance_id=str(instance.id),
                 account_id=str(instance.account_id))


async def may_read_credentials(session: AsyncSession, *, instance: Instance, user_id: uuid.UUID, role: Role) -> bool:
    """Owners and admins of the account; a seat's holder too, for their own seat."""
    if role in {Role.owner, Role.admin}:
        return True
    seat = (await SeatRepository(session).of_instances([instance.id])).get(instance.id)
    return seat is not None and seat.user_id == user_id


async def credentials(session: AsyncSession, box: SecretBox, *, instance: Instance) -> list[tuple[str, str]]:
    seat = (await SeatRepository(session).of_instances([instance.id])).get(instance.id)
    if seat is not None:
        return await _seat_credentials(session, box, seat=seat, account_id=instance.account_id)
    template = await InstanceRepository(session).template(instance.template_code)
    spec = readable_template(template.spec) if template else None
    shown = {v.name for v in spec.env if v.secret} if spec else set()
    values = await vault.read(session, box, owner_type="instance", owner_id=instance.id)
    revealed = sorted((name, value) for name, value in values.items() if name in shown)
    # Who saw which secrets, never their values: a credential read is as sensitive as a change.
    await audit.record(session, action="instance.credentials_read", target_type="instance", target_id=instance.id,
                       account_id=instance.account_id, after={"names": [name for name, _ in revealed]})
    return revealed



async def _seat_credentials(session: AsyncSession, box: SecretBox, *, seat: Seat,
                            account_id: uuid.UUID) -> list[tuple[str, str]]:
    """The platform username, and the initial password once, when its user exists: it is forgotten as it is shown
    (the holder changes it on the platform; a lost one is reset there). The seat is locked, so two reads at once
    cannot both see it."""
    locked = await SeatRepository(session).lock(seat.instance_id) or seat
    values = await vault.read(session, box, owner_type=SEAT_SECRETS, owner_id=seat.instance_id)
    revealed = [("username", seat.email)]
    if PASSWORD in values and locked.platform_user_id is not None:
        revealed.append(("password", values[PASSWORD]))
        await vault.forget(session, owner_type=SEAT_SECRETS, owner_id=seat.instance_id)
    await audit.record(session, action="instance.credentials_read", target_type="instance",
                       target_id=seat.instance_id, account_id=account_id,
                       after={"names": [name for name, _ in revealed], "password_forgotten": len(revealed) > 1})
    return revealed


EXPIRY_NOTICE_HORIZON = timedelta(days=3)


async def send_expiry_notices(session: AsyncSession, settings: Settings, *, now: datetime) -> int:
    """Email "expiring in 3 days" once per instance for subscriptions about to end; returns how many went out."""
    repository = InstanceRepository(session)
    sent = 0
    horizon = now + EXPIRY_NOTICE_HORIZON
    for account_id, ends in await BillingRepository(session).claim_expiry_notices(now, horizon):
        account = await repository.account(account_id)
        if account is None or not account.billing_email:
            continue
        subscriptions = await BillingRepository(session).all_of(account_id)
        if any(s.status == "active" and s.current_period_end > horizon and not s.cancel_at_period_end
               for s, _ in subscriptions):
            continue  # another subscription keeps the services running: nothing is expiring
        for instance in await repository.counting_toward_quota(account_id, now):
            await queue_email(session, to=account.billing_email, template="instance_expiring",
                              values={"name": instance.name, "ends": f"{ends:%Y-%m-%d %H:%M} UTC"})
            sent += 1
    return sent


# --- files of sites that serve them ---------------------------------------------------------------------------

MAX_FILE_PATH = 1024
MAX_PATH_SEGMENT = 255


class InvalidFilePath(AppError):
    status_code = 422
    code = "invalid_path"


def serves_files(template: TemplateSpec | None) -> bool:
    """A template whose process serves its data directory as the site (static-site): files uploaded there are
    what it serves."""
    return template is not None and template.process is not None and "{data_dir}" in template.process.command


def checked_file_path(path: str) -> tuple[str, ...]:
    """The path's segments, relative and inside the site: no absolute path, no `..` or `.`, no empty segment,
    no NUL or control characters, no backslash, a sane length."""
    if not path or len(path) > MAX_FILE_PATH:
        raise InvalidFilePath(f"The file path must be 1 to {MAX_FILE_PATH} characters")
    if path.startswith("/") or "\\" in path or any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise InvalidFilePath("The file path must be relative, without backslashes or control characters")
    segments = tuple(path.split("/"))
    if any(s in ("", ".", "..") or len(s) > MAX_PATH_SEGMENT for s in segments):
        raise InvalidFilePath(f"Each part of the file path must be a name of 1 to {MAX_PATH_SEGMENT} characters, "
                              "not '.' or '..'")
    return segments


def _write_inside(root: Path, segments: tuple[str, ...], content: bytes) -> bool:
    """Write `content` to root/segments without following a symbolic link anywhere below root (a link placed
    in the site must not lead a write outside it). Returns True when the file is new."""
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for name in segments[:-1]:
            try:
                os.mkdir(name, 0o755, dir_fd=directory)
            except FileExistsError:
                pass
            try:
                inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            except (NotADirectoryError, OSError) as error:  # a file, or a link (ELOOP), where a folder should be
                raise InvalidFilePath(f"{name!r} in the path is not a folder of the site") from error
            os.close(directory)
            directory = inner
        existed = True
        try:
            os.stat(segments[-1], dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            existed = False
        try:
            handle = os.open(segments[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644,
                             dir_fd=directory)
        except OSError as error:  # a link (ELOOP) or a folder (EISDIR) by that name
            raise InvalidFilePath(f"{segments[-1]!r} is not a file of the site") from error
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        return not existed
    finally:
        os.close(directory)


async def write_file(
    session: AsyncSession, *, instance: Instance, site_root: Path, path: str, content: bytes
) -> tuple[str, bool]:
    """Put one file of a site that serves files (audited). Returns (its relative path, created?)."""
    template_row = await InstanceRepository(session).template(instance.template_code)
    template = readable_template(template_row.spec) if template_row is not None else None
    if not serves_files(template):
        raise Conflict(f"The {instance.template_code!r} service does not serve uploaded files",
                       code="files_not_supported")
    segments = checked_file_path(path)
    if not site_root.is_dir():
        raise Conflict("The site is not ready for files yet; try again once it has started", code="not_ready")
    created = await asyncio.to_thread(_write_inside, site_root, segments, content)
    relative = "/".join(segments)
    await audit.record(session, action="instance.file_written", target_type="instance", target_id=instance.id,
                       account_id=instance.account_id, after={"path": relative, "size": len(content), "created": created})
    return relative, created
