"""Browser sessions on credits: a customer asks for a browser from one of their session pools and gets a CDP URL
through our proxy, with a token for that session alone.

How a start holds together (in the request's transaction, committed between the steps, so a crash anywhere
converges):

1. Under the account's lock: the entitlement allows sessions (a throttled account gets half its concurrency, at
   least one; a stopped one none), the concurrency limit is kept (sessions starting count), and one credit is
   debited with the session's own idempotency key. The session row (`starting`) and the debit commit together,
   before any browser is taken (a crash now leaves a `starting` session the reaper ends and refunds).
2. A browser is taken from the pool: a warm one at once, or one started on demand.
3. The session becomes `active` with its browser, or, when no browser could be had, `ended` (`start_failed`)
   with its credit refunded in the same transaction.

A pool's template may bill sessions per second instead of per session (`pool.billing`); see `_charge`.

A session ends by `end` (the customer), or by the reaper (every second, in the process that runs the
browsers): its maximum lifetime (`timeout`), no CDP traffic for the pool's idle timeout or no client connected
for its disconnect grace (`idle`), its browser gone with its stopped pool (`suspended`) or dead (`crashed`), and
a start that never finished (`start_failed`, refunded). Ending records the duration (billed per second as
session-minutes, no minimum), kills the browser (no cookies, storage or tabs reach another session), closes the
client's WebSocket with the reason (close code 4000 + n, the reason as its text) and tops the pool up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from jushostit.audit import service as audit
from jushostit.billing.facts import instance_facts, load_entitlement_inputs
from jushostit.billing.repository import BillingRepository
from jushostit.catalog.spec import PoolForm, TemplateSpec
from jushostit.config import Settings
from jushostit.credits import service as credits
from jushostit.credits.repository import CreditsRepository
from jushostit.entitlement import Level
from jushostit.events.repository import EventRepository
from jushostit.kit import context
from jushostit.kit.db import Database, utcnow
from jushostit.kit.errors import AppError, BadRequest, Conflict, NotFound, ServiceUnavailable, TooManyRequests
from jushostit.metering.service import record_session_usage
from jushostit.models import BrowserSession, Instance
from jushostit.runtime.local.browsers import BrowserPools, BrowserStartFailed, PoolFull
from jushostit.sessions.repository import SessionRepository
from jushostit.sessions.schemas import SessionCreate

log = structlog.get_logger(__name__)

CLOSE_CODES = {"ended": 4000, "timeout": 4001, "idle": 4002, "credits_exhausted": 4003, "suspended": 4004,
               "crashed": 4005, "start_failed": 4006}
START_GRACE = timedelta(seconds=60)  # a session still `starting` after this never got its browser
SESSION_CREDITS = 1
RUNNING = {"running", "throttled"}


class PaymentRequired(AppError):
    status_code = 402
    code = "insufficient_credits"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(session: BrowserSession, token: str) -> bool:
    return hmac.compare_digest(session.token_hash, token_hash(token))


# --- what this process knows of its sessions ---------------------------------------------------------------------

Closer = Callable[[int, str], Awaitable[None]]


@dataclass
class Activity:
    """A session's clients on this process's proxy, and when it last carried CDP traffic (monotonic)."""

    last: float = field(default_factory=time.monotonic)
    clients: dict[int, Closer] = field(default_factory=dict)
    disconnected_at: float | None = None

    def touch(self) -> None:
        self.last = time.monotonic()


class Live:
    """The sessions of this process: their activity, their clients, the starts under way and the orders waiting
    for a free slot."""

    def __init__(self) -> None:
        self.activity: dict[uuid.UUID, Activity] = {}
        self.starting: set[uuid.UUID] = set()
        self.slot_freed: dict[uuid.UUID, asyncio.Event] = {}
        self.waiting: dict[uuid.UUID, int] = {}
        self.background: set[asyncio.Task[object]] = set()

    def connect(self, session_id: uuid.UUID, close: Closer) -> int:
        activity = self.activity.setdefault(session_id, Activity())
        key = id(close)
        activity.clients[key] = close
        activity.touch()
        return key

    def disconnect(self, session_id: uuid.UUID, key: int) -> None:
        activity = self.activity.get(session_id)
        if activity is not None:
            activity.clients.pop(key, None)
            if not activity.clients:
                activity.disconnected_at = time.monotonic()

    def touch(self, session_id: uuid.UUID) -> None:
        activity = self.activity.get(session_id)
        if activity is not None:
            activity.touch()

    def freed(self, account_id: uuid.UUID) -> None:
        event = self.slot_freed.pop(account_id, None)
        if event is not None:
            event.set()

    def later(self, work: Awaitable[object]) -> None:
        async def run() -> object:
            return await work

        task: asyncio.Task[object] = asyncio.ensure_future(run())
        self.background.add(task)
        task.add_done_callback(self.background.discard)


LIVE = Live()


# --- what a customer's CDP may ask ------------------------------------------------------------------------------

# The browser runs on our host: commands that reach its files or processes are refused at the proxy.
REFUSED_METHODS = frozenset({
    "Browser.setDownloadBehavior", "Page.setDownloadBehavior",  # writing files where the customer says
    "Network.loadNetworkResource",  # reads file: URLs outside any page's origin
    "Browser.crash", "Browser.crashGpuProcess", "Browser.executeBrowserCommand",
    "SystemInfo.getProcessInfo", "Target.exposeDevToolsProtocol", "Target.setRemoteLocations",
})
URL_METHODS = frozenset({"Page.navigate", "Target.createTarget"})
ALLOWED_SCHEMES = ("http:", "https:", "about:", "data:")


def refusal(message: str) -> str | None:
    """Why a CDP command from the customer is refused (None: it goes to the browser)."""
    try:
        command = json.loads(message)
    except ValueError:
        return None  # not ours to judge: the browser answers it
    if not isinstance(command, dict):
        return None
    method = command.get("method")
    if method in REFUSED_METHODS:
        return f"{method} is not allowed on this server"
    params = command.get("params")
    if method in URL_METHODS and isinstance(params, dict):
        url = str(params.get("url", "")).strip().lower()
        if url and not url.startswith(ALLOWED_SCHEMES):
            return "only http, https, about and data URLs may be opened"
    return None


def refused_answer(message: str, why: str) -> str:
    """The CDP error answer to a refused command, with its id."""
    try:
        command_id = json.loads(message).get("id")
    except (ValueError, AttributeError):
        command_id = None
    return json.dumps({"id": command_id, "error": {"code": -32000, "message": why}})


# --- starting ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    session: BrowserSession
    token: str
    credits_left: int


class SessionLimitReached(Conflict):
    code = "session_limit_reached"


class Transaction(Protocol):
    """The caller's transaction (the request's session), ended at the points a start needs."""

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


async def start(session: AsyncSession, transaction: Transaction, settings: Settings, pools: BrowserPools, *,
                account_id: uuid.UUID, data: SessionCreate, idempotency_key: str | None = None) -> Started:
    """A session, or a clear refusal that changed nothing: 402 without credits, 409 over the concurrency limit
    (after waiting up to `wait_seconds` in a bounded queue: 429 when it is full), 503 when no browser could be
    had (its credit refunded). The caller's transaction is committed where a start needs it durable (the debit
    before a browser is taken; a failed start's refund), and rolled back before waiting for a free slot (no
    lock held while waiting). A request repeated with its `Idempotency-Key` answers the session the first one
    started, with a new token for it (only the token's hash is kept), and debits nothing again."""
    deadline = time.monotonic() + data.wait_seconds
    while True:
        try:
            if idempotency_key is not None:
                replayed = await _replay(session, account_id=account_id, key=idempotency_key)
                if replayed is not None:
                    return replayed
            reservation = await _reserve(session, settings, account_id=account_id, data=data,
                                         idempotency_key=idempotency_key)
            break
        except SessionLimitReached as refused:
            await transaction.rollback()
            await _wait_for_a_slot(account_id, int(refused.details["limit"]), deadline, refused)
    await transaction.commit()  # the debit and the `starting` row, before any browser is taken
    reserved = reservation.session
    LIVE.starting.add(reserved.id)
    try:
        try:
            browser, warm = await pools.take(reserved.pool_id)
        except (KeyError, PoolFull, BrowserStartFailed) as error:
            why = "its pool is not running on this server" if isinstance(error, KeyError) else str(error)
            ended = await close(session, session_id=reserved.id, reason="start_failed")
            await transaction.commit()  # the refund stands although the request fails
            await release(pools, ended)
            raise ServiceUnavailable(f"No browser could be had: {why}; the credit was refunded",
                                     code="session_start_failed") from error
        try:
            started_at = utcnow()
            if not await SessionRepository(session).mark_started(
                    reserved.id, browser_id=browser.id, warm=warm, started_at=started_at,
                    expires_at=started_at + timedelta(seconds=reserved.max_seconds)):
                raise Conflict("The session ended before its browser was ready", code="session_ended")
            await audit.record(session, action="session.started", target_type="browser_session",
                               target_id=reserved.id, account_id=account_id, actor=context.SYSTEM,
                               after={"warm": warm})
            await transaction.commit()  # the browser is the session's only once this is durable
        except BaseException:
            await pools.discard(browser.id)
            raise
        LIVE.activity[reserved.id] = Activity()
        await session.refresh(reserved)
    finally:
        LIVE.starting.discard(reserved.id)
    log.info("session.started", session_id=str(reserved.id), warm=warm)
    return reservation


async def _wait_for_a_slot(account_id: uuid.UUID, limit: int, deadline: float, refused: AppError) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise refused
    if LIVE.waiting.get(account_id, 0) >= limit:
        full = TooManyRequests("Too many requests are already waiting for a session of this account", retry_after=1)
        full.code = "session_queue_full"
        raise full from refused
    LIVE.waiting[account_id] = LIVE.waiting.get(account_id, 0) + 1
    try:
        event = LIVE.slot_freed.setdefault(account_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=min(remaining, 1.0))
    finally:
        LIVE.waiting[account_id] -= 1


async def _replay(session: AsyncSession, *, account_id: uuid.UUID, key: str) -> Started | None:
    """The session this key started, under the account's lock, with a new token (None: the key is new)."""
    await BillingRepository(session).lock_account(account_id)
    row = await SessionRepository(session).by_idempotency_key(account_id, key)
    if row is None:
        return None
    if row.status == "starting":
        raise Conflict("The session this key asked for is still starting: repeat in a moment",
                       code="session_starting", details={"session_id": str(row.id)})
    if row.status == "ended":
        raise Conflict("The session this key started has ended", code="session_ended",
                       details={"session_id": str(row.id), "end_reason": row.end_reason})
    token = secrets.token_urlsafe(32)
    row.token_hash = token_hash(token)
    await audit.record(session, action="session.token_renewed", target_type="browser_session", target_id=row.id,
                       account_id=account_id, after={"idempotency_key": key})
    await session.flush()
    return Started(row, token, await CreditsRepository(session).live_balance(account_id, utcnow()))


async def _reserve(session: AsyncSession, settings: Settings, *, account_id: uuid.UUID,
                   data: SessionCreate, idempotency_key: str | None) -> Started:
    """Under the account's lock: entitled, within the concurrency, one credit debited, the row `starting`."""
    token = secrets.token_urlsafe(32)
    account = await BillingRepository(session).lock_account(account_id)
    if account is None:
        raise NotFound("Account not found")
    now = utcnow()
    facts = await load_entitlement_inputs(session, account, now=now,
                                          expired_retention_days=settings.expired_retention_days)
    entitled = facts.decide(now, instance_facts([]))
    if entitled.level < Level.throttled:
        raise Conflict("Browser sessions are not available: " + ("; ".join(entitled.reasons) or "not entitled"),
                       code="not_entitled", details={"level": entitled.level.name})
    limit = concurrency(entitled.level, entitled.quotas.concurrent_sessions)
    if limit == 0:
        raise Conflict("The account's plan includes no browser sessions", code="sessions_not_included")
    repository = SessionRepository(session)
    pool, form = await _pool(repository, account_id, data.pool)
    longest = entitled.quotas.session_max_minutes * 60
    if data.timeout_seconds is not None and data.timeout_seconds > longest:
        raise BadRequest(f"A session lasts at most {longest} seconds on this plan", code="timeout_exceeds_plan",
                         details={"max_seconds": longest})
    open_now = await repository.open_count(account_id)
    if open_now >= limit:
        raise SessionLimitReached(f"The account has {open_now} sessions open, its limit",
                                  details={"limit": limit, "open": open_now})
    row = BrowserSession(account_id=account_id, pool_id=pool.id, token_hash=token_hash(token), status="starting",
                         max_seconds=data.timeout_seconds or longest, refunded=False, idempotency_key=idempotency_key,
                         charged_seconds=1 if form.billing == "second" else 0)  # the start's credit: its first second
    await repository.add(row)
    try:
        change = await credits.debit(session, account_id=account_id, amount=SESSION_CREDITS, reason="browser session",
                                     reference=str(row.id), idempotency_key=f"session:{row.id}")
    except Conflict as refused:
        if refused.code != "insufficient_credits":
            raise
        raise PaymentRequired(refused.message, details=refused.details) from refused
    assert change.entry is not None
    row.debit_entry_id = change.entry.id
    await audit.record(session, action="session.requested", target_type="browser_session", target_id=row.id,
                       account_id=account_id, after={"pool_id": str(pool.id), "max_seconds": row.max_seconds})
    return Started(row, token, change.balance)  # the token is kept only as its hash


def credits_taken(row: BrowserSession) -> int:
    """What the session cost: its seconds when billed per second, else its one credit (none once refunded)."""
    if row.refunded:
        return 0
    return row.charged_seconds or SESSION_CREDITS


def concurrency(level: Level, included: int) -> int:
    """How many sessions an account may have open: all its plans include at full speed, half (at least one)
    when throttled, none below."""
    if level >= Level.running:
        return included
    if level == Level.throttled:
        return max(1, included // 2) if included else 0
    return 0


async def _pool(repository: SessionRepository, account_id: uuid.UUID,
                wanted: uuid.UUID | None) -> tuple[Instance, PoolForm]:
    pools = await repository.pools_of(account_id)
    if wanted is not None:
        pools = [(i, spec) for i, spec in pools if i.id == wanted]
        if not pools:
            raise NotFound("No such session pool in this account", code="pool_not_found")
    if not pools:
        raise Conflict("The account has no session pool: order one (a session_pool template) first",
                       code="no_session_pool")
    if len(pools) > 1:
        raise BadRequest("The account has several session pools: name one in `pool`", code="pool_required",
                         details={"pools": [str(i.id) for i, _ in pools]})
    [(instance, spec)] = pools
    try:
        template = TemplateSpec.model_validate(spec)
    except ValidationError:
        template = None
    if template is None or template.pool is None:
        raise Conflict("The session pool's template is unavailable", code="template_unavailable")
    if instance.observed_status not in RUNNING:
        raise Conflict(f"The session pool is {instance.observed_status}", code="pool_not_running",
                       details={"status": instance.observed_status})
    return instance, template.pool


# --- ending ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ended:
    """A session just ended in the caller's transaction, and what to do once that commits."""

    row: BrowserSession
    reason: str
    changed: bool  # False: it had ended already


def billed_until(row: BrowserSession, now: datetime) -> datetime:
    """A session is billed and metered until it ends, never past its maximum lifetime: one the server could not
    end on time (it was down) costs no more than its lifetime."""
    return min(now, row.expires_at) if row.expires_at is not None else now


async def close(session: AsyncSession, *, session_id: uuid.UUID, reason: str) -> Ended:
    """End the session in the caller's transaction (a repeated end changes nothing): its duration recorded and
    metered, a start that never got its browser refunded. `release` does the rest once that commits."""
    now = utcnow()
    row = await SessionRepository(session).lock(session_id)
    if row is None:
        raise NotFound("Session not found", code="session_not_found")
    if row.status == "ended":
        return Ended(row, reason, changed=False)
    before = row.status
    until = billed_until(row, now)
    if row.started_at is not None and row.charged_seconds:  # per-second billing: the seconds not yet paid
        await _charge(session, row, until, final=True)
    row.status, row.end_reason, row.ended_at = "ended", reason, now
    if row.started_at is not None:
        row.duration_ms = max(0, int((until - row.started_at).total_seconds() * 1000))
        await record_session_usage(session, account_id=row.account_id, pool_id=row.pool_id, session_id=row.id,
                                   start=row.started_at, end=until, now=now)
    elif row.debit_entry_id is not None:
        await credits.refund(session, account_id=row.account_id, entry_id=row.debit_entry_id, amount=None,
                             reason="browser session did not start", idempotency_key=f"session-refund:{row.id}")
        row.refunded = True
    await audit.record(session, action="session.ended", target_type="browser_session", target_id=row.id,
                       account_id=row.account_id, before={"status": before},
                       after={"reason": reason, "duration_ms": row.duration_ms, "refunded": row.refunded})
    await session.flush()
    return Ended(row, reason, changed=True)


async def release(pools: BrowserPools, ended: Ended) -> None:
    """After the end committed: the client told why (before its browser goes, which would drop the connection
    first), the browser killed with its profile, a waiting request woken, the pool topped up."""
    if not ended.changed:
        return
    row = ended.row
    activity = LIVE.activity.pop(row.id, None)
    if activity is not None:  # told why before the browser goes, which would drop the connection first
        await asyncio.gather(*(_tell(closer, ended.reason) for closer in list(activity.clients.values())))
    if row.browser_id is not None:
        await pools.discard(row.browser_id)
    LIVE.freed(row.account_id)
    LIVE.later(_top_up(pools, row.pool_id))
    log.info("session.ended", session_id=str(row.id), reason=ended.reason)


CLOSE_TIMEOUT_SECONDS = 2.0


async def _tell(closer: Closer, reason: str) -> None:
    """A client's close frame with the reason; a client that does not take it in time is dropped with the browser."""
    with contextlib.suppress(Exception):  # gone already, or too slow
        await asyncio.wait_for(closer(CLOSE_CODES[reason], reason), timeout=CLOSE_TIMEOUT_SECONDS)


async def _top_up(pools: BrowserPools, pool_id: uuid.UUID) -> None:
    with contextlib.suppress(BrowserStartFailed):
        await pools.top_up(pool_id)


# --- per-second billing ------------------------------------------------------------------------------------------

CHARGE_EVERY_SECONDS = 15  # credits are taken in steps this long, and every second once they run low
LOW_CREDIT_SECONDS = 60  # the customer is told when what is left covers less than this


async def _charge(session: AsyncSession, row: BrowserSession, now: datetime, *, final: bool = False) -> str | None:
    """Take the seconds the session has run and not yet paid, one credit each, in the caller's transaction.
    Returns `credits_exhausted` when the account could not pay them all (what it had is taken). The account is
    told, once per session, when its credits cover less than a minute more."""
    assert row.started_at is not None
    due = int((now - row.started_at).total_seconds())
    owed = due - row.charged_seconds
    if owed <= 0:
        return None
    balance = await CreditsRepository(session).live_balance(row.account_id, now)
    if not final and owed < CHARGE_EVERY_SECONDS and balance - owed >= LOW_CREDIT_SECONDS:
        return None
    paid = min(owed, balance)
    while paid:
        # Keyed by the seconds it pays for: a range is taken once, whatever retries or ends follow.
        key = f"session:{row.id}:{row.charged_seconds}-{row.charged_seconds + paid}"
        try:
            change = await credits.debit(session, account_id=row.account_id, amount=paid,
                                         reason="browser session time", reference=str(row.id), idempotency_key=key)
        except Conflict as refused:  # another debit took credits since the balance was read: take what is left
            if refused.code != "insufficient_credits":
                raise
            balance = int(refused.details["balance"])
            paid = min(owed, balance)
            continue
        row.charged_seconds += paid
        balance = change.balance
        break
    if balance < LOW_CREDIT_SECONDS and row.warned_at is None and not final:
        row.warned_at = now
        await EventRepository(session).publish({
            "type": "session.credits_low", "account_id": str(row.account_id), "session_id": str(row.id),
            "credits_left": balance, "at": now.isoformat()})
        await audit.record(session, action="session.credits_low", target_type="browser_session", target_id=row.id,
                           account_id=row.account_id, actor=context.SYSTEM, after={"credits_left": balance})
    return "credits_exhausted" if row.charged_seconds < due else None


# --- the reaper --------------------------------------------------------------------------------------------------


async def reap(database: Database, pools: BrowserPools) -> dict[uuid.UUID, str]:
    """End what must end now; returns the sessions ended with their reasons. Then replace dead warm browsers."""
    now, clock = utcnow(), time.monotonic()
    async with database.reader() as session:
        repository = SessionRepository(session)
        rows = await repository.open_sessions()
        forms: dict[uuid.UUID, PoolForm | None] = {}
        for pool_id in {row.pool_id for row in rows}:
            spec = await repository.pool_template(pool_id)
            try:
                forms[pool_id] = TemplateSpec.model_validate(spec).pool
            except ValidationError:
                forms[pool_id] = None
    ended = {}
    for row in rows:
        try:
            reason = await _reap_one(database, pools, row, forms.get(row.pool_id), now, clock)
        except Exception as error:  # noqa: BLE001 - one session's failure must not stop the others' ends
            log.error("sessions.reap_one_failed", session_id=str(row.id), error=f"{type(error).__name__}: {error}"[:500])
            continue
        if reason is not None:
            ended[row.id] = reason
    await pools.maintain()
    return ended


async def _reap_one(database: Database, pools: BrowserPools, row: BrowserSession, form: PoolForm | None,
                    now: datetime, clock: float) -> str | None:
    reason = _why_it_ends(row, form, pools, now, clock)
    if reason is None and row.status == "active" and row.charged_seconds:
        async with database.unit_of_work() as session:
            locked = await SessionRepository(session).lock(row.id)
            if locked is not None and locked.status == "active":
                reason = await _charge(session, locked, billed_until(locked, now))
    if reason is not None:
        async with database.unit_of_work() as session:
            done = await close(session, session_id=row.id, reason=reason)
        await release(pools, done)
    return reason


async def end_all(database: Database, pools: BrowserPools, *, reason: str) -> int:
    """End every session whose browser this process lent (at shutdown: the browsers go with it), so none is left
    open, or billed, while the server is down."""
    ended = 0
    for session_id in list(LIVE.activity):
        try:
            async with database.unit_of_work() as session:
                done = await close(session, session_id=session_id, reason=reason)
            await release(pools, done)
            ended += done.changed
        except Exception as error:  # noqa: BLE001 - the others still end
            log.error("sessions.end_failed", session_id=str(session_id), error=type(error).__name__)
    return ended


def _why_it_ends(row: BrowserSession, form: PoolForm | None, pools: BrowserPools, now: datetime,
                 clock: float) -> str | None:
    if row.status == "starting":
        stuck = row.id not in LIVE.starting and now - row.created_at > START_GRACE
        return "start_failed" if stuck else None
    browser = pools.lent(row.browser_id) if row.browser_id else None
    if browser is None:
        return "suspended" if row.browser_id in pools.drained else "crashed"
    if not browser.alive:
        return "crashed"
    if row.expires_at is not None and now >= row.expires_at:
        return "timeout"
    activity = LIVE.activity.setdefault(row.id, Activity())
    if form is not None:
        if clock - activity.last > form.idle_timeout_seconds:
            return "idle"
        quiet_since = activity.disconnected_at or activity.last
        if not activity.clients and clock - quiet_since > form.disconnect_grace_seconds:
            return "idle"
    return None


async def run_reaper(database: Database, pools: BrowserPools, stop: asyncio.Event, *,
                     interval: float = 1.0) -> None:
    """The reaper, every `interval` seconds until `stop` (in the process that runs the browsers)."""
    while not stop.is_set():
        try:
            await reap(database, pools)
        except Exception as error:  # noqa: BLE001 - logged; the next round tries again
            log.error("sessions.reap_failed", error=f"{type(error).__name__}: {error}"[:500])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
