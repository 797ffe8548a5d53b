"""Tests on COMMITTED data: the reconciler, the worker and the router use their own database sessions, so these
tests cannot run inside the rolled-back test transaction of tests/conftest.py.

`live` gives a test its own data dir (the local runtime's instance directories live in tmp_path), an app
built on the shared container *without* the session override (every request commits, as in production), and
cleans up what the test created: instance processes are stopped through the driver (plus any stray left in
the test's data dir), the test's accounts, users, secrets, emails and queued jobs are deleted. The audit table
is append-only and keeps its entries.

Do not mix `live` with the rolled-back fixtures (`session`, `client`, `signup`, `app`): their open transaction
would hold the audit chain's head lock and block every committed request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest
import uvicorn
from sqlalchemy import delete, select, text, update

from jushostit.app import create_app
from jushostit.config import Settings
from jushostit.container import Container
from jushostit.kit import jobs
from jushostit.models import (
    Account,
    AuditEntry,
    BillingMode,
    EmailOutbox,
    Instance,
    Membership,
    Role,
    ServiceTemplate,
    StoredSecret,
    User,
)
from jushostit.reconcile import service as reconcile_service
from jushostit.runtime.local.driver import LocalDriver
from jushostit.runtime.protocol import Observed
from jushostit.runtime.registry import driver_for, local_driver
from jushostit.server import FETCH_POLLING_SECONDS
from tests.conftest import TEST_PASSWORD, Signup, asgi_client, committed_email_reader, sign_up

T = TypeVar("T")
DEADLINE = 20.0


async def eventually(condition: Callable[[], Awaitable[T] | T], what: str, timeout: float = DEADLINE,
                     interval: float = 0.02) -> T:
    """Poll a condition (sync or async) until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)  # polling a condition, bounded by the deadline


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """`app` on a real uvicorn on a free loopback port, in this event loop (so it shares the test's database
    pool), for a caller outside this process such as a webhook sender; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False,
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), "uvicorn to start")
        if task.done():
            await task  # raises what stopped it
            raise AssertionError("uvicorn stopped before it started")
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


def processes_in(directory: Path) -> list[psutil.Process]:
    """Live (not zombie) processes whose working directory is `directory` or below it."""
    marker = str(directory.resolve())
    found = []
    for process in psutil.process_iter(["pid", "cwd", "status"]):
        cwd = process.info["cwd"]
        if process.info["status"] == psutil.STATUS_ZOMBIE or not cwd:
            continue
        if cwd == marker or cwd.startswith(marker + os.sep):
            found.append(process)
    return found


class Live:
    def __init__(self, settings: Settings, container: Container, app: Any, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.container = container
        self.app = app
        self.client = client
        self.driver: LocalDriver = local_driver(settings)
        self.accounts: set[uuid.UUID] = set()
        self.users: set[uuid.UUID] = set()
        self.emails: set[str] = set()

    # --- arranging ----------------------------------------------------------------------------------------
    def configure(self, **overrides: Any) -> None:
        """Change settings for this test (the worker's jobs and the reconciler read the container's)."""
        assert "data_dir" not in overrides
        self.settings = self.settings.model_copy(update=overrides)
        self.container.settings = self.settings

    async def signup(self, account_name: str = "Live Co", *, verified: bool = True) -> Signup:
        email = f"live-{uuid.uuid4().hex[:10]}@example.com"
        who = await sign_up(self.client, committed_email_reader(self.container), email, account_name, verified=verified)
        self.accounts.add(uuid.UUID(who.account_id))
        self.users.add(uuid.UUID(who.user_id))
        self.emails.add(email)
        return who

    async def admin(self) -> Signup:
        """A platform admin (the flag set in the database, the way an operator does it)."""
        who = await self.signup("Platform")
        async with self.container.database.unit_of_work() as session:
            await session.execute(update(User).where(User.id == uuid.UUID(who.user_id)).values(is_platform_admin=True))
        return who

    async def add_member(self, owner: Signup, role: Role) -> Signup:
        """Another user, member of `owner`'s account with `role` (inserted as an accepted invite would)."""
        other = await self.signup("Elsewhere")
        async with self.container.database.unit_of_work() as session:
            session.add(Membership(account_id=uuid.UUID(owner.account_id), user_id=uuid.UUID(other.user_id), role=role))
        return other

    async def set_billing_mode(self, who: Signup, mode: BillingMode) -> None:
        async with self.container.database.unit_of_work() as session:
            await session.execute(update(Account).where(Account.id == uuid.UUID(who.account_id)).values(billing_mode=mode))

    async def paid_starter(self, admin: Signup, account_name: str, mode: BillingMode = BillingMode.invoice) -> Signup:
        """An account on the starter plan (three instances), billed by `mode` and marked paid by an operator."""
        owner = await self.signup(account_name)
        await self.set_billing_mode(owner, mode)
        pending = (await self.checkout(owner, "starter"))["subscription"]
        paid = await self.client.post(f"/v1/admin/subscriptions/{pending['id']}/mark-paid", headers=admin.headers)
        assert paid.status_code == 200, paid.text
        return owner

    async def login(self, who: Signup) -> dict[str, str]:
        """Fresh tokens (inside a travelled clock the signup's token has expired)."""
        response = await self.client.post("/v1/auth/login", json={"email": who.email, "password": TEST_PASSWORD})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    async def checkout(self, who: Signup, plan: str = "free") -> dict[str, Any]:
        response = await self.client.post(f"/v1/accounts/{who.account_id}/checkout", json={"plan": plan},
                                          headers=who.headers)
        assert response.status_code == 201, response.text
        return response.json()

    async def order(self, who: Signup, name: str = "site", template: str = "static-site") -> httpx.Response:
        return await self.client.post(f"/v1/accounts/{who.account_id}/instances",
                                      json={"template": template, "name": name}, headers=who.headers)

    async def ordered(self, who: Signup, name: str = "site", template: str = "static-site") -> dict[str, Any]:
        response = await self.order(who, name, template)
        assert response.status_code == 201, response.text
        return response.json()

    async def placed(self, who: Signup, name: str, template: str) -> dict[str, Any]:
        """An instance of a template that ordering refuses today (one this runtime cannot run), as an order
        accepted earlier left it — or as one whose template changed since: its row, then a reconcile pass (which
        also generates the template's values). Returns it as the API shows it."""
        async with self.container.database.unit_of_work() as session:
            spec = await session.scalar(select(ServiceTemplate.spec).where(ServiceTemplate.code == template))
            assert spec is not None, template
            instance = Instance(account_id=uuid.UUID(who.account_id), template_code=template, name=name,
                                slug=f"{name}-{uuid.uuid4().hex[:6]}", tier=spec["default_tier"],
                                desired_level="running", observed_status="provisioning")
            session.add(instance)
            await session.flush()
            instance_id = str(instance.id)
        await self.reconcile(who.account_id)
        return await self.instance(who, instance_id)

    # --- acting -------------------------------------------------------------------------------------------
    async def work(self, **options: Any) -> None:
        """A real procrastinate worker that processes what is queued (ours and any leftovers), including the
        reconciles queued for the next seconds (a follow-up of a starting instance, a pass waiting for the
        account's lock; not a retry's backoff), then returns."""
        while True:
            await jobs.app.run_worker_async(wait=False, install_signal_handlers=False,
                                            queues=["reconcile", "email", "default"], **options)
            soon = await self._next_soon()
            if soon is None:
                return
            await eventually(functools.partial(self._due, soon), "the next queued reconcile to be due")

    async def _next_soon(self) -> int | None:
        async with self.container.database.engine.connect() as connection:
            return await connection.scalar(text(
                # Due already or due soon: one that became due while the last worker was finishing counts too.
                "SELECT id FROM procrastinate_jobs WHERE status = 'todo'"
                " AND coalesce(scheduled_at, now()) <= now() + interval '10 seconds'"
                " AND (queueing_lock LIKE 'reconcile-follow-up:%' OR queueing_lock LIKE 'reconcile-busy:%'"
                "  OR task_name = 'instance.restart')"
                " ORDER BY scheduled_at LIMIT 1"
            ))

    async def _due(self, job_id: int) -> bool:
        async with self.container.database.engine.connect() as connection:
            return bool(await connection.scalar(text(
                "SELECT coalesce(scheduled_at <= now(), true) FROM procrastinate_jobs WHERE id = :id"
            ), {"id": job_id}) is not False)

    async def converge(self, account_id: str | uuid.UUID) -> Observed | None:
        """Reconcile the account until no instance of it is still starting (as the follow-ups would)."""
        last = await self.reconcile(account_id)

        async def settled() -> bool:
            nonlocal last
            if last is not None and any(seen.status == "provisioning" for seen in last.instances.values()):
                last = await self.reconcile(account_id)
                return False
            return True

        await eventually(settled, f"the instances of {account_id} to settle")
        return last

    @contextlib.asynccontextmanager
    async def worker_running(self) -> AsyncIterator[None]:
        """A real worker that waits for jobs (LISTEN/NOTIFY), as `serve` runs it, for the duration of the block."""
        task = asyncio.create_task(jobs.app.run_worker_async(
            install_signal_handlers=False, queues=["reconcile", "email"], concurrency=2, name=f"live-{uuid.uuid4().hex[:6]}",
            fetch_job_polling_interval=FETCH_POLLING_SECONDS,
        ))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def reconcile(self, account_id: str | uuid.UUID) -> Observed | None:
        c = self.container
        return await reconcile_service.reconcile_account(
            c.database, c.settings, c.secret_box, driver_for(c.settings, c.database, c.secret_box),
            uuid.UUID(str(account_id))
        )

    # --- observing ----------------------------------------------------------------------------------------
    async def instance(self, who: Signup | dict[str, str], instance_id: str) -> dict[str, Any]:
        headers = who.headers if isinstance(who, Signup) else who
        response = await self.client.get(f"/v1/instances/{instance_id}", headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def until_status(self, who: Signup, instance_id: str, status: str, timeout: float = DEADLINE) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            body = await self.instance(who, instance_id)
            return body if body["status"] == status else None

        return await eventually(reached, f"instance {instance_id} to be {status}", timeout)

    async def page(self, slug: str, path: str = "/") -> httpx.Response:
        """A request through the LocalRouter of the app, as a browser on <slug>.localhost:<port> sends it."""
        return await self.client.get(path, headers={"Host": f"{slug}.localhost:{self.settings.port}"})

    async def row(self, instance_id: str | uuid.UUID) -> Instance:
        async with self.container.database.sessionmaker() as session:
            found = await session.get(Instance, uuid.UUID(str(instance_id)))
            assert found is not None
            return found

    async def emails_of(self, who: Signup, template: str | None = None) -> list[EmailOutbox]:
        async with self.container.database.sessionmaker() as session:
            stmt = select(EmailOutbox).where(EmailOutbox.to_address == who.email).order_by(EmailOutbox.created_at)
            if template is not None:
                stmt = stmt.where(EmailOutbox.template == template)
            return list((await session.scalars(stmt)).all())

    async def audit(self, action: str, target_id: str) -> list[AuditEntry]:
        async with self.container.database.sessionmaker() as session:
            stmt = select(AuditEntry).where(AuditEntry.action == action, AuditEntry.target_id == str(target_id))
            return list((await session.scalars(stmt.order_by(AuditEntry.seq))).all())

    async def jobs_of(self, account_id: str, status: str | None = None) -> list[Any]:
        """The account's reconcile jobs that are due (not the exact jobs scheduled at a future deadline)."""
        async with self.container.database.engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT id, status, queueing_lock, lock FROM procrastinate_jobs WHERE task_name = 'account.reconcile' "
                    "AND args->>'account_id' = :account_id AND (CAST(:status AS text) IS NULL OR status::text = :status) "
                    "AND (scheduled_at IS NULL OR scheduled_at <= now()) ORDER BY id"
                ),
                {"account_id": str(account_id), "status": status},
            )
            return list(rows.all())

    async def queued(self, account_id: str) -> int:
        """Due jobs of any task waiting for the account (reconcile, restart)."""
        async with self.container.database.engine.connect() as connection:
            return int(await connection.scalar(text(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo' AND args->>'account_id' = :id "
                "AND (scheduled_at IS NULL OR scheduled_at <= now())"
            ), {"id": str(account_id)}) or 0)

    async def scheduled_of(self, account_id: str) -> list[Any]:
        """The account's reconcile jobs waiting for a future deadline: (scheduled_at, queueing_lock)."""
        async with self.container.database.engine.connect() as connection:
            rows = await connection.execute(text(
                "SELECT scheduled_at, queueing_lock FROM procrastinate_jobs WHERE task_name = 'account.reconcile' "
                "AND status = 'todo' AND args->>'account_id' = :id AND scheduled_at > now() ORDER BY scheduled_at"
            ), {"id": str(account_id)})
            return list(rows.all())

    def instance_dir(self, instance: dict[str, Any]) -> Path:
        return self.driver.instance_dir(uuid.UUID(instance["account_id"]), uuid.UUID(instance["id"]))

    def data_dir(self, instance: dict[str, Any]) -> Path:
        return self.instance_dir(instance) / "data"

    # --- cleaning up --------------------------------------------------------------------------------------
    async def cleanup(self) -> None:
        for account_id in self.accounts:
            with contextlib.suppress(Exception):
                await self.driver.destroy(account_id)
        for process in processes_in(self.settings.data_dir):  # strays a crash test may have left
            with contextlib.suppress(psutil.Error):
                process.kill()
        if not (self.accounts or self.users):
            return
        accounts = [str(a) for a in self.accounts]
        async with self.container.database.unit_of_work() as session:
            instance_ids = (await session.scalars(select(Instance.id).where(Instance.account_id.in_(self.accounts)))).all()
            if instance_ids:
                await session.execute(delete(StoredSecret).where(StoredSecret.owner_type == "instance",
                                                                 StoredSecret.owner_id.in_(instance_ids)))
            await session.execute(
                text("DELETE FROM procrastinate_jobs WHERE status = 'todo' AND args->>'account_id' = ANY(:ids)"),
                {"ids": accounts},
            )
            await session.execute(delete(EmailOutbox).where(EmailOutbox.to_address.in_(self.emails)))
            await session.execute(delete(Account).where(Account.id.in_(self.accounts)))
            await session.execute(delete(User).where(User.id.in_(self.users)))


@pytest.fixture
async def live(container: Container, settings: Settings, tmp_path: Path) -> AsyncIterator[Live]:
    custom = settings.model_copy(update={"data_dir": tmp_path})
    original = container.settings
    container.settings = custom  # the worker's jobs (driver_for(container.settings)) use this data dir
    application = create_app(custom, container)
    try:
        async with asgi_client(application) as client:
            state = Live(custom, container, application, client)
            # Jobs other tests left queued (their data rolled back) run now, against this empty data dir, so a
            # test's worker runs only the test's own jobs.
            await state.work()
            try:
                yield state
            finally:
                await state.cleanup()
    finally:
        await application.state.broker.close()
        container.settings = original
