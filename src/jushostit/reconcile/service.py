"""The reconciler: entitlement + instances → complete desired state → apply through the driver → observed
state written back. Idempotent (a pass with nothing changed makes no driver writes) and level-triggered (it
never needs the event that caused it). Never writes an effect before it happened (REFERENCE §1 F6, F8)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit
from jushostit.billing.facts import entitlement_inputs
from jushostit.catalog.spec import TemplateSpec
from jushostit.config import Settings
from jushostit.events.repository import EventRepository
from jushostit.entitlement import Entitlement, InstanceFacts, Level
from jushostit.kit import context
from jushostit.kit.crypto import SecretBox
from jushostit.kit.db import Database, utcnow
from jushostit.models import Account, Instance, Plan, Subscription
from jushostit.notifications.service import queue_email
from jushostit.reconcile.desired import InstanceInput, build_desired
from jushostit.reconcile.repository import ReconcileLocks, ReconcileRepository
from jushostit.reconcile.trigger import at_deadline, follow_up
from jushostit.runtime.protocol import Observed, ObservedInstance, RuntimeDriver
from jushostit.runtime.registry import instance_address

log = structlog.get_logger(__name__)


def account_entitlement(
    account: Account,
    subscriptions: list[tuple[Subscription, Plan]],
    instances: list[Instance],
    now: datetime,
    settings: Settings,
) -> Entitlement:
    inputs = entitlement_inputs(account, subscriptions, expired_retention_days=settings.expired_retention_days)
    return inputs.decide(now, [InstanceFacts(i.id, i.delete_requested_at) for i in instances])


@dataclass
class Snapshot:
    account: Account
    instances: list[Instance]
    entitled: Entitlement
    inputs: list[InstanceInput]
    templates: dict[str, TemplateSpec]
    secrets: dict[uuid.UUID, dict[str, str]] = field(default_factory=dict)
    next_change: datetime | None = None  # when time alone may change the entitlement


async def snapshots(
    session: AsyncSession, settings: Settings, box: SecretBox, account_ids: list[uuid.UUID], now: datetime
) -> dict[uuid.UUID, Snapshot]:
    """The facts of many accounts in a fixed number of queries (accounts that no longer exist are absent)."""
    repository = ReconcileRepository(session)
    accounts = await repository.accounts_with_subscriptions(account_ids)
    instances = await repository.live_instances(list(accounts))
    # A template or secret that cannot be read fails only the instances that need it (recorded on them when
    # the desired state cannot be built), never the whole batch.
    templates = {}
    for template in await repository.templates({i.template_code for i in instances}):
        try:
            templates[template.code] = TemplateSpec.model_validate(template.spec)
        except ValidationError:
            log.error("reconcile.template_invalid", template=template.code)
    secrets: dict[uuid.UUID, dict[str, str]] = {}
    for secret in await repository.instance_secrets([i.id for i in instances]):
        try:
            secrets.setdefault(secret.owner_id, {})[secret.name] = box.decrypt(secret.ciphertext)
        except ValueError:
            log.error("reconcile.secret_unreadable", instance_id=str(secret.owner_id), name=secret.name)
    result = {}
    for account_id, (account, subscriptions) in accounts.items():
        own = [i for i in instances if i.account_id == account_id]
        inputs = []
        for instance in own:
            url, host = instance_address(settings, instance.slug)
            inputs.append(InstanceInput(instance.id, instance.slug, instance.name, instance.template_code, url, host))
        facts = entitlement_inputs(account, subscriptions, expired_retention_days=settings.expired_retention_days)
        instance_facts = [InstanceFacts(i.id, i.delete_requested_at) for i in own]
        used = {i.template_code for i in own}
        result[account_id] = Snapshot(
            account, own, facts.decide(now, instance_facts), inputs,
            {c: templates[c] for c in used if c in templates}, secrets,
            facts.next_change(now, instance_facts),
        )
    return result


async def reconcile_account(
    database: Database, settings: Settings, box: SecretBox, driver: RuntimeDriver, account_id: uuid.UUID
) -> Observed | None:
    """One full pass for one account (the job path). Waits for the account's lock; raises when the driver
    fails, after recording the error (the job retries with backoff)."""
    async with database.autocommit.connect() as lock_connection:
        await ReconcileLocks(lock_connection).wait_for(account_id)
        try:
            async with database.reader() as session:
                snap = (await snapshots(session, settings, box, [account_id], utcnow())).get(account_id)
            if snap is None:
                await driver.destroy(account_id)
                return None
            observed = await _converge(database, settings, driver, snap)
            if snap.next_change is not None:
                await at_deadline(account_id, snap.next_change)  # an exact job; the resync is the safety net
            return observed
        finally:
            await ReconcileLocks(lock_connection).release_all()


async def reconcile_batch(
    database: Database, settings: Settings, box: SecretBox, driver: RuntimeDriver, account_ids: list[uuid.UUID]
) -> tuple[int, int]:
    """One pass over many accounts (the resync path), with their facts read in a few queries. An account
    whose lock is held — a reconcile job is running for it — is skipped: that job converges it.
    Returns (reconciled, driver writes). A failing account is recorded and does not stop the others."""
    reconciled = writes = 0
    async with database.autocommit.connect() as lock_connection:
        locks = ReconcileLocks(lock_connection)
        locked = await locks.try_many(account_ids)
        try:
            async with database.reader() as session:
                found = await snapshots(session, settings, box, locked, utcnow())
            for snap in found.values():
                try:
                    observed = await _converge(database, settings, driver, snap)
                except Exception:  # noqa: BLE001 - recorded on the instances by _converge; the next pass retries
                    continue
                finally:
                    await locks.release(snap.account.id)  # a fact change waiting on this account goes on now
                reconciled += 1
                writes += observed.writes
        finally:
            await locks.release_all()
    return reconciled, writes


async def _converge(database: Database, settings: Settings, driver: RuntimeDriver, snap: Snapshot) -> Observed:
    try:
        desired = build_desired(snap.account.id, snap.inputs, snap.entitled, snap.templates, snap.secrets)
        observed = await driver.apply(desired)
    except Exception as error:
        async with database.unit_of_work() as session:
            await _record_failure(session, snap, error, utcnow())
        raise
    if snap.instances:  # nothing to write back for an account without instances
        async with database.unit_of_work() as session:
            await write_back(session, settings, snap, observed, utcnow())
        if any(seen.status == "provisioning" for seen in observed.instances.values()):
            await follow_up(snap.account.id)
    errors = [seen.error for seen in observed.instances.values() if seen.error]
    if errors:
        raise InstancesFailed(errors)  # recorded above; raising makes the job retry with backoff
    return observed


class InstancesFailed(RuntimeError):
    """Some instances could not be applied (recorded on them); the others converged."""


async def _record_failure(session: AsyncSession, snap: Snapshot, error: Exception, now: datetime) -> None:
    message = f"{type(error).__name__}: {error}"[:2000]
    for instance in await ReconcileRepository(session).instances_for_update([i.id for i in snap.instances]):
        instance.last_error = message
        instance.failures += 1
        instance.last_reconciled_at = now
    log.warning("reconcile.failed", account_id=str(snap.account.id), error=message)


def _observed_for(instance: Instance, level: Level, observed: Observed) -> ObservedInstance:
    if level == Level.deleted:
        return ObservedInstance("deleted", "deleted")
    seen = observed.instances.get(instance.id, ObservedInstance("failed", "not reported by the runtime"))
    if seen.status == "stopped" and level == Level.expired:
        return ObservedInstance("expired", "subscription ended; data kept for the retention period")
    if seen.status == "running" and level == Level.throttled:
        return ObservedInstance("throttled", "monthly budget reached")
    return seen


async def write_back(session: AsyncSession, settings: Settings, snap: Snapshot, observed: Observed,
                     now: datetime) -> None:
    repository = ReconcileRepository(session)
    by_id = {i.id: i for i in snap.inputs}
    for instance in await repository.instances_for_update([i.id for i in snap.instances]):
        level = snap.entitled.instances[instance.id].level
        seen = _observed_for(instance, level, observed)
        reason = seen.reason or ("; ".join(snap.entitled.instances[instance.id].reasons) or None)
        before = instance.observed_status
        instance.desired_level = level.name
        instance.observed_status = seen.status
        instance.status_reason = reason[:500] if reason else None
        instance.last_reconciled_at = now
        instance.last_error = seen.error
        instance.failures = instance.failures + 1 if seen.error else 0
        if level == Level.expired and instance.expired_at is None:
            instance.expired_at = now
        elif level > Level.expired:
            instance.expired_at = None
        if level == Level.deleted and instance.deleted_at is None:
            instance.deleted_at = now
        if before != seen.status:
            await _announce(session, settings, snap, instance, by_id[instance.id].url, before, seen.status, now)


def lifecycle_email(before: str, after: str) -> str | None:
    """Which email a status change sends, if any."""
    if after == "running":
        return "instance_restored" if before in {"stopped", "expired", "throttled"} else "instance_ready"
    return {"stopped": "instance_suspended", "expired": "instance_expired", "deleted": "instance_deleted"}.get(after)


async def _announce(session: AsyncSession, settings: Settings, snap: Snapshot, instance: Instance, url: str,
                    before: str, after: str, now: datetime) -> None:
    await audit.record(
        session,
        action="instance.status_changed",
        target_type="instance",
        target_id=instance.id,
        account_id=snap.account.id,
        before={"status": before},
        after={"status": after, "reason": instance.status_reason},
        actor=context.SYSTEM,
    )
    payload = {"type": "instance.status", "account_id": str(snap.account.id), "instance_id": str(instance.id),
               "status": after, "reason": instance.status_reason, "at": now.isoformat()}
    await EventRepository(session).publish(payload)
    template = lifecycle_email(before, after)
    if template and snap.account.billing_email:
        await queue_email(session, to=snap.account.billing_email, template=template,
                          values={"name": instance.name, "url": url, "reason": instance.status_reason or "",
                                  "retention_days": str(settings.expired_retention_days)})
