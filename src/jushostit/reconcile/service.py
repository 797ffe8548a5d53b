"""The reconciler: entitlement + instances → complete desired state → apply through the driver → observed
state written back. Idempotent (a pass with nothing changed writes nothing, to the runtime or the database)
and level-triggered (it never needs the event that caused it). Never writes an effect before it happened
(REFERENCE §1 F6, F8).

Rules (DESIGN §2):
- Each account is applied from facts read under its own lock; a fact change that lands meanwhile queues one
  more pass, which waits for this one (triggers.when_free).
- Deleting data is irreversible, so it happens only after a fresh read, in the transaction that records it,
  still says `deleted` (`_delete_if_still_deleted`).
- Failures are per instance: one broken instance is `failed` with its reason and its siblings converge. A pass
  that fails as a whole is logged, counted, recorded on the account for admins and retried with backoff.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit
from jushostit.billing import service as billing
from jushostit.billing.facts import entitlement_inputs, instance_facts
from jushostit.billing.repository import BillingRepository
from jushostit.catalog.spec import SeatTemplateSpec, TemplateSpec, parse_template
from jushostit.clusters import service as clusters
from jushostit.config import Settings
from jushostit.entitlement import DunningStage, Entitlement, Level, current_dunning_stage
from jushostit.events.repository import EventRepository
from jushostit.kit import context, metrics
from jushostit.kit.crypto import SecretBox
from jushostit.kit.db import Database, utcnow
from jushostit.models import Instance
from jushostit.notifications.service import queue_email
from jushostit.platforms.facts import SeatFacts
from jushostit.platforms.repository import SeatRepository
from jushostit.reconcile.desired import InstanceInput, build_desired, missing_generated
from jushostit.reconcile.repository import AccountRow, ReconcileLocks, ReconcileRepository
from jushostit.runtime.protocol import Observed, ObservedInstance, RuntimeDriver
from jushostit.runtime.registry import addresses
from jushostit.triggers import (
    at_deadline,
    follow_up,
    request_reconcile,
    retry_after_failure,
    when_free,
)
from jushostit.vault import service as vault

log = structlog.get_logger(__name__)

RETRY_BASE_SECONDS = 2
RETRY_MAX_SECONDS = 300
# What a customer reads when a pass failed; the error itself is for platform admins.
SAFE_FAILURE_REASON = "the platform could not apply a change; it retries automatically"


@dataclass
class Snapshot:
    account: AccountRow
    instances: list[Instance]
    entitled: Entitlement
    inputs: list[InstanceInput]
    templates: dict[str, TemplateSpec]
    ciphertexts: dict[uuid.UUID, dict[str, str]] = field(default_factory=dict)
    next_change: datetime | None = None  # when time alone may change the entitlement
    past_due_since: datetime | None = None  # the past-due episode the facts show, if any
    dunning: DunningStage | None = None  # the e-mail that episode calls for now
    suspends_at: datetime | None = None  # when its grace ends
    seat_templates: dict[str, SeatTemplateSpec] = field(default_factory=dict)
    seats: dict[uuid.UUID, SeatFacts] = field(default_factory=dict)  # the instances that are seats

    @property
    def dunning_notice_due(self) -> bool:
        """An episode to announce, or one whose e-mails went out and whose end is still to announce."""
        return self.dunning is not None or self.account.dunning_episode is not None


async def snapshots(
    session: AsyncSession, settings: Settings, account_ids: list[uuid.UUID], now: datetime
) -> dict[uuid.UUID, Snapshot]:
    """The facts of many accounts in a fixed number of queries (accounts that no longer exist are absent).
    Secrets stay encrypted: a pass decrypts only what it sends to the runtime."""
    repository = ReconcileRepository(session)
    accounts = await repository.accounts_with_subscriptions(account_ids, now)
    instances = await repository.live_instances(list(accounts))
    # A template that cannot be read fails only the instances that use it (build_desired names the problem).
    templates: dict[str, TemplateSpec] = {}
    seat_templates: dict[str, SeatTemplateSpec] = {}
    for template in await repository.templates({i.template_code for i in instances}):
        try:
            spec = parse_template(template.spec)
        except ValidationError:
            log.error("reconcile.template_invalid", template=template.code)
            continue
        if isinstance(spec, SeatTemplateSpec):
            seat_templates[template.code] = spec
        else:
            templates[template.code] = spec
    # Asked only when some instance is a seat: a pass over apps makes no query more.
    seats = await SeatRepository(session).facts([i.id for i in instances if i.template_code in seat_templates])
    ciphertexts = await repository.secret_ciphertexts([i.id for i in instances])
    book = await addresses(session, settings, list(accounts))
    result = {}
    for account_id, (account, subscriptions) in accounts.items():
        own = [i for i in instances if i.account_id == account_id]
        inputs = []
        for instance in own:
            url, host = book.of(account_id, instance.slug)
            inputs.append(InstanceInput(instance.id, instance.slug, instance.name, instance.template_code,
                                        instance.tier, url, host))
        facts = entitlement_inputs(account, subscriptions, invoice_due_at=account.invoice_due_at,
                                   month_spend_minor=account.month_spend_minor, now=now,
                                   expired_retention_days=settings.expired_retention_days)
        facts_of_instances = instance_facts(own)
        used = {i.template_code for i in own}
        past_due_since = facts.account_at(now).past_due_since  # an overdue invoice's episode is one too
        result[account_id] = Snapshot(
            account, own, facts.decide(now, facts_of_instances), inputs,
            {c: templates[c] for c in used if c in templates},
            {i.id: ciphertexts.get(i.id, {}) for i in own},
            facts.next_change(now, facts_of_instances),
            past_due_since,
            current_dunning_stage(past_due_since, facts.policy, now),
            past_due_since + facts.policy.grace if past_due_since else None,
            {c: seat_templates[c] for c in used if c in seat_templates},
            {i.id: seats[i.id] for i in own if i.id in seats},
        )
    return result


# --- the two paths ----------------------------------------------------------------------------------------


async def reconcile_account(
    database: Database, settings: Settings, box: SecretBox, driver: RuntimeDriver, account_id: uuid.UUID
) -> Observed | None:
    """One full pass for one account (the job path). When another pass holds the account, this one is queued
    again to run after it rather than waiting. Returns what was observed, or None when nothing was applied."""
    async with database.autocommit.connect() as lock_connection:
        locks = ReconcileLocks(lock_connection)
        if not await locks.try_lock(account_id):
            await when_free(account_id)
            return None
        try:
            async with database.reader() as session:
                snap = (await snapshots(session, settings, [account_id], utcnow())).get(account_id)
            if snap is None:
                await driver.destroy(account_id)  # the account is gone (read just now, under its lock)
                return None
            if snap.next_change is not None:
                await at_deadline(account_id, snap.next_change)  # scheduled whatever the apply does next
            return await _pass(database, settings, box, driver, snap, path="job")
        finally:
            await locks.release(account_id)


async def reconcile_batch(
    database: Database,
    settings: Settings,
    box: SecretBox,
    driver: RuntimeDriver,
    account_ids: list[uuid.UUID],
    *,
    deadline_horizon: timedelta,
) -> tuple[int, int]:
    """One pass over many accounts (the resync path): their locks are tried, then their facts read, in a few
    queries. An account whose lock is held is skipped (the pass holding it converges it). Deadlines within
    `deadline_horizon` get their exact job; later ones are scheduled by a later resync. Returns (accounts
    reconciled, driver writes). A failing account is recorded and does not stop the others."""
    reconciled = writes = 0
    async with database.autocommit.connect() as lock_connection:
        locks = ReconcileLocks(lock_connection)
        locked = await locks.try_many(account_ids)
        try:
            now = utcnow()
            async with database.reader() as session:
                found = await snapshots(session, settings, locked, now)
            for snap in (found[account_id] for account_id in locked if account_id in found):
                if snap.next_change is not None and snap.next_change <= now + deadline_horizon:
                    await at_deadline(snap.account.id, snap.next_change)
                observed = await _pass(database, settings, box, driver, snap, path="resync")
                if observed is not None:
                    reconciled += 1
                    writes += observed.writes
        finally:
            await locks.release_all()
    return reconciled, writes


async def _pass(
    database: Database, settings: Settings, box: SecretBox, driver: RuntimeDriver, snap: Snapshot, *, path: str
) -> Observed | None:
    metrics.reconcile_passes.labels(path).inc()
    try:
        observed = await converge(database, settings, box, driver, snap)
        if snap.dunning_notice_due:
            async with database.unit_of_work() as session:
                await billing.send_dunning_notice(
                    session, settings, snap.account, past_due_since=snap.past_due_since, stage=snap.dunning,
                    suspends_at=snap.suspends_at, now=utcnow())
    except Exception as error:  # noqa: BLE001 - logged, counted, recorded, retried: never hidden
        await _account_failed(database, snap.account, error, path=path)
        return None
    transient = [seen.error for seen in observed.instances.values() if seen.error]
    if transient:
        await _account_failed(database, snap.account, InstancesFailed(transient), path=path)
    elif snap.account.reconcile_error is not None:
        async with database.unit_of_work() as session:
            await ReconcileRepository(session).clear_account_error(snap.account.id)
    return observed


class InstancesFailed(RuntimeError):
    """Some instances could not be applied (recorded on them); the others converged."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(f"{len(errors)} instance(s) failed: " + "; ".join(errors))


async def _account_failed(database: Database, account: AccountRow, error: Exception, *, path: str) -> None:
    message = f"{type(error).__name__}: {error}"[:2000]
    metrics.reconcile_failures.labels(path).inc()
    failures = account.reconcile_failures + 1
    delay = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS ** min(failures, 12))
    log.error("reconcile.account_failed", account_id=str(account.id), path=path, error=message,
              failures=failures, retry_in_seconds=delay)
    try:
        async with database.unit_of_work() as session:
            await ReconcileRepository(session).record_account_error(account.id, message, utcnow())
    except Exception as recording:  # noqa: BLE001 - the database itself may be what failed; the retry stands
        log.error("reconcile.error_not_recorded", account_id=str(account.id), error=type(recording).__name__)
    await retry_after_failure(account.id, delay)


# --- one account --------------------------------------------------------------------------------------------


async def converge(
    database: Database, settings: Settings, box: SecretBox, driver: RuntimeDriver, snap: Snapshot
) -> Observed:
    snap = await _fill_generated(database, box, snap)
    desired = build_desired(snap.account.id, snap.inputs, snap.entitled, snap.templates, snap.ciphertexts,
                            box.decrypt, snap.seat_templates, snap.seats)
    observed = await driver.apply(desired.state)
    deleted = set()
    for instance_id in desired.to_delete:
        if await _delete_if_still_deleted(database, settings, driver, snap, instance_id):
            deleted.add(instance_id)
            observed.writes += 1
    await write_back(database, settings, snap, observed, deleted)
    starting = [i for i in snap.instances if observed.instances.get(i.id, _SETTLED).status == "provisioning"]
    if starting:
        await follow_up(snap.account.id, follow_up_delay(starting, utcnow()))
    return observed


_SETTLED = ObservedInstance("running")
FOLLOW_UP_MIN_SECONDS = 0.25
FOLLOW_UP_MAX_SECONDS = 30.0


def follow_up_delay(starting: list[Instance], now: datetime) -> float:
    """How soon to look again at starting instances: half as long as the most recently started one has been
    starting, between 0.25 s and 30 s. A process that answers within a second is seen running within a second;
    a cluster rollout of minutes is not polled twice a second."""
    def since(instance: Instance) -> datetime:
        if instance.observed_status != "provisioning":
            return now  # it started in this pass
        return instance.last_reconciled_at or instance.created_at

    waited = min((now - since(i)).total_seconds() for i in starting)
    return min(FOLLOW_UP_MAX_SECONDS, max(FOLLOW_UP_MIN_SECONDS, waited / 2))


async def _fill_generated(database: Database, box: SecretBox, snap: Snapshot) -> Snapshot:
    """A template that gained a generated variable (an upgrade) gets a value for it in every existing
    instance, generated once and stored like the ones made at order time."""
    missing = {
        instance.id: names
        for instance in snap.inputs
        if (template := snap.templates.get(instance.template_code)) is not None
        and (names := missing_generated(template, set(snap.ciphertexts[instance.id])))  # every input has an entry
    }
    if not missing:
        return snap
    ciphertexts = {k: dict(v) for k, v in snap.ciphertexts.items()}
    by_id = {i.id: i for i in snap.inputs}
    async with database.unit_of_work() as session:
        for instance_id, names in missing.items():
            template = snap.templates[by_id[instance_id].template_code]
            for var in template.env:
                if var.name in names and var.generate is not None:
                    stored = await vault.put(session, box, owner_type="instance", owner_id=instance_id,
                                             name=var.name, value=var.generate.new_value())
                    ciphertexts.setdefault(instance_id, {})[var.name] = stored.ciphertext
            await audit.record(session, action="instance.values_generated", target_type="instance",
                               target_id=instance_id, account_id=snap.account.id, after={"names": names},
                               actor=context.SYSTEM)
    return replace(snap, ciphertexts=ciphertexts)


async def _delete_if_still_deleted(
    database: Database, settings: Settings, driver: RuntimeDriver, snap: Snapshot, instance_id: uuid.UUID
) -> bool:
    """Remove an instance's data only if the facts read now, in the transaction that records the deletion,
    with the account row locked against fact writers, still say `deleted`."""
    async with database.unit_of_work() as session:
        billing = BillingRepository(session)
        account = await billing.lock_account(snap.account.id)
        instance = next(iter(await ReconcileRepository(session).instances_for_update([instance_id])), None)
        if account is None or instance is None or instance.deleted_at is not None:
            return False
        now = utcnow()
        facts = entitlement_inputs(account, await billing.all_of(account.id),
                                   invoice_due_at=await billing.oldest_open_invoice_due(account.id),
                                   month_spend_minor=await billing.month_spend(account.id, now), now=now,
                                   expired_retention_days=settings.expired_retention_days)
        entitled = facts.decide(now, instance_facts([instance]))
        if entitled.instances[instance.id].level != Level.deleted:
            log.info("reconcile.delete_withdrawn", account_id=str(account.id), instance_id=str(instance.id))
            request_reconcile(account.id)  # the facts changed since this pass read them: look again
            return False
        await driver.remove_instance(account.id, instance.id)
        await clusters.release_hosts(session, instance_id=instance.id)
        before = instance.observed_status
        instance.desired_level = Level.deleted.name
        instance.observed_status = "deleted"
        instance.status_reason = "; ".join(entitled.instances[instance.id].reasons)[:500] or None
        instance.last_error = None
        instance.deleted_at = now
        instance.last_reconciled_at = now
        url = next(i.url for i in snap.inputs if i.id == instance_id)
        await _announce(session, settings, account, instance, url, before, "deleted", now)
    return True


def _observed_for(level: Level, observed: Observed, instance_id: uuid.UUID) -> ObservedInstance:
    """What the runtime reported, named for the customer: a stopped instance whose subscription ended is
    `expired`. Never the intent: an instance the runtime did not report is `failed`."""
    seen = observed.instances.get(instance_id, ObservedInstance("failed", "not reported by the runtime"))
    if seen.status == "stopped" and level == Level.expired:
        return ObservedInstance("expired", "subscription ended; data kept for the retention period")
    return seen


@dataclass(frozen=True)
class _Row:
    """The reconciler's columns of an instance."""

    desired_level: str
    observed_status: str
    status_reason: str | None
    last_error: str | None
    failures: int
    expired_at: datetime | None


def _next_row(instance: Instance, level: Level, seen: ObservedInstance, reasons: tuple[str, ...],
              now: datetime) -> _Row:
    reason = seen.reason or ("; ".join(reasons) or None)
    if seen.error:
        reason = reason or SAFE_FAILURE_REASON
    expired_at = instance.expired_at
    if level == Level.expired and expired_at is None:
        expired_at = now
    elif level > Level.expired:
        expired_at = None
    return _Row(level.name, seen.status, reason[:500] if reason else None, seen.error,
                instance.failures + 1 if seen.error else 0, expired_at)


def _row_of(instance: Instance) -> _Row:
    return _Row(instance.desired_level, instance.observed_status, instance.status_reason, instance.last_error,
                instance.failures, instance.expired_at)


async def write_back(database: Database, settings: Settings, snap: Snapshot, observed: Observed,
                     deleted: set[uuid.UUID]) -> None:
    """Record what changed, and only that: a pass that changed nothing opens no transaction."""
    now = utcnow()
    changes = {}
    for instance in snap.instances:
        if instance.id in deleted:
            continue
        entitled = snap.entitled.instances[instance.id]
        row = _next_row(instance, entitled.level, _observed_for(entitled.level, observed, instance.id),
                        entitled.reasons, now)
        if row != _row_of(instance):
            changes[instance.id] = row
    status = snap.entitled.account_status
    if not changes and status == snap.account.status.value:
        return
    by_id = {i.id: i for i in snap.inputs}
    async with database.unit_of_work() as session:
        repository = ReconcileRepository(session)
        if status != snap.account.status.value:
            await repository.cache_account_status(snap.account.id, status)
            await audit.record(session, action="account.status_changed", target_type="account",
                               target_id=snap.account.id, account_id=snap.account.id,
                               before={"status": snap.account.status.value}, after={"status": status},
                               actor=context.SYSTEM)
        for instance in await repository.instances_for_update(list(changes)):
            if instance.deleted_at is not None:
                continue
            row = changes[instance.id]
            before = instance.observed_status
            instance.desired_level = row.desired_level
            instance.observed_status = row.observed_status
            instance.status_reason = row.status_reason
            instance.last_error = row.last_error
            instance.failures = row.failures
            instance.expired_at = row.expired_at
            instance.last_reconciled_at = now
            if before != row.observed_status:
                await _announce(session, settings, snap.account, instance, by_id[instance.id].url, before,
                                row.observed_status, now)


def lifecycle_email(settled_before: str | None, after: str, *, first_ready: bool) -> str | None:
    """Which email a status change sends, if any: "ready" the first time it serves (at full speed or
    throttled), "restored" after a stop, an expiry or a throttle; a process started again after a crash is not
    news (its last settled status was running)."""
    if first_ready:
        return "instance_ready"
    if after == "running":
        return "instance_restored" if settled_before in {"stopped", "expired", "throttled"} else None
    return {"stopped": "instance_suspended", "expired": "instance_expired", "deleted": "instance_deleted"}.get(after)


async def _announce(session: AsyncSession, settings: Settings, account: AccountRow, instance: Instance, url: str,
                    before: str, after: str, now: datetime) -> None:
    await audit.record(
        session,
        action="instance.status_changed",
        target_type="instance",
        target_id=instance.id,
        account_id=account.id,
        before={"status": before},
        after={"status": after, "reason": instance.status_reason},
        actor=context.SYSTEM,
    )
    first_ready = after in {"running", "throttled"} and instance.first_ready_at is None
    if first_ready:
        instance.first_ready_at = now
    settled_before = instance.settled_status
    if after != "provisioning":
        instance.settled_status = after
    payload = {"type": "instance.status", "account_id": str(account.id), "instance_id": str(instance.id),
               "status": after, "reason": instance.status_reason, "at": now.isoformat()}
    await EventRepository(session).publish(payload)
    template = lifecycle_email(settled_before, after, first_ready=first_ready)
    if template and account.billing_email:
        await queue_email(session, to=account.billing_email, template=template,
                          values={"name": instance.name, "url": url, "reason": instance.status_reason or "",
                                  "retention_days": str(settings.expired_retention_days)})
