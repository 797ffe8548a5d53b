"""A crash never stops the control loop (issue 7 §0), tried as an operator would: `kill -9` of the real
`jushostit serve` while an `account.reconcile` or an `account.resync` job is in the middle of an apply, then a
restart. The next admin action is applied in seconds, the resync keeps its schedule, and the dead worker's
jobs are handed back to the queue (procrastinate's worker heartbeats).

The apply is caught in the middle with a real-world hang, not a fault hook in the product: the tenant's
process is SIGSTOPped, so stopping it (SIGTERM, then SIGKILL after a grace period) takes seconds.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import psycopg
import pytest

from jushostit.kit.db import libpq_url
from tests.conftest import _with_database as with_database
from tests.e2e.test_serve import FIRST_START_BUDGET, PASSWORD, RESTART_BUDGET, Serve, login, signup, wait_for
from tests.live import processes_in

pytestmark = pytest.mark.e2e

EFFECT_BUDGET = 30.0  # seconds from an action to its observed effect, a restart's recovery included


@pytest.fixture
def database(server_url: str) -> Iterator[str]:
    """A fresh database of its own for the serve process (so the test can watch its job table)."""
    name = f"jushostit_crash_{uuid.uuid4().hex[:10]}"
    admin = libpq_url(server_url)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield libpq_url(with_database(server_url, name))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def stopped_processes() -> Iterator[list[psutil.Process]]:
    """Tenant processes the test froze; thawed and killed afterwards whatever happens."""
    frozen: list[psutil.Process] = []
    yield frozen
    for process in frozen:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


class Operator:
    def __init__(self, serve: Serve, database: str) -> None:
        self.serve = serve
        self.database = database
        self.admin: dict[str, str] = {}

    @property
    def base(self) -> str:
        return self.serve.base_url

    def start(self, budget: float = FIRST_START_BUDGET) -> None:
        self.serve.start(budget)
        if not self.admin:
            email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
            created = self.serve.run("admin", "create", "--email", email, "--password", PASSWORD)
            assert created.returncode == 0, created.stderr
            self.admin = {"Authorization": f"Bearer {login(self.base, email)}"}

    def customer_with_a_site(self) -> tuple[dict[str, str], str, dict[str, Any]]:
        customer = signup(self.serve, f"owner-{uuid.uuid4().hex[:8]}@example.com")
        headers = {"Authorization": f"Bearer {customer['access_token']}"}
        account_id = customer["account"]["id"]
        checkout = httpx.post(f"{self.base}/v1/accounts/{account_id}/checkout", json={"plan": "free"}, headers=headers)
        assert checkout.status_code == 201, checkout.text
        order = httpx.post(f"{self.base}/v1/accounts/{account_id}/instances",
                           json={"template": "static-site", "name": "site"}, headers=headers)
        assert order.status_code == 201, order.text
        instance = order.json()
        self.until_status(headers, instance["id"], "running")
        return headers, account_id, instance

    def status(self, headers: dict[str, str], instance_id: str) -> str:
        return str(httpx.get(f"{self.base}/v1/instances/{instance_id}", headers=headers, timeout=10).json()["status"])

    def until_status(self, headers: dict[str, str], instance_id: str, status: str) -> None:
        try:
            wait_for(lambda: self.status(headers, instance_id) == status, EFFECT_BUDGET,
                     f"instance {instance_id} to be {status}", interval=0.2)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.serve.logs()}") from None

    def suspend(self, account_id: str, reason: str) -> None:
        response = httpx.post(f"{self.base}/v1/admin/accounts/{account_id}/suspend", json={"reason": reason},
                              headers=self.admin, timeout=10)
        assert response.status_code == 200, response.text

    def processes(self, instance: dict[str, Any]) -> list[psutil.Process]:
        return processes_in(self.serve.data_dir / "instances" / instance["account_id"] / instance["id"])

    def job(self, task: str, status: str, account_id: str | None = None) -> int | None:
        with psycopg.connect(self.database) as connection:
            row = connection.execute(
                "SELECT id FROM procrastinate_jobs WHERE task_name = %s AND status = %s"
                " AND (%s::text IS NULL OR args->>'account_id' = %s) ORDER BY id LIMIT 1",
                (task, status, account_id, account_id),
            ).fetchone()
        return int(row[0]) if row else None

    def job_status(self, job_id: int) -> str | None:
        with psycopg.connect(self.database) as connection:
            row = connection.execute("SELECT status::text FROM procrastinate_jobs WHERE id = %s", (job_id,)).fetchone()
        return str(row[0]) if row else None  # None: finished and deleted

    def kill_during(self, task: str, account_id: str | None = None) -> int:
        """kill -9 serve once a `task` job is running; returns that job's id."""
        found = wait_for(lambda: self.job(task, "doing", account_id), EFFECT_BUDGET, f"a running {task} job",
                         interval=0.05)
        self.serve.kill()
        assert self.job_status(found) == "doing"  # what the crash left behind
        return found


def freeze(operator: Operator, instance: dict[str, Any], frozen: list[psutil.Process]) -> None:
    """A tenant process that hangs: stopping it now takes the driver's whole grace period."""
    [process] = operator.processes(instance)
    os.killpg(process.pid, signal.SIGSTOP)
    frozen.append(process)


def metric(base: str, name: str) -> list[str]:
    return [line for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines() if line.startswith(name)]


def test_kill_9_during_a_reconcile_then_the_next_suspend_is_applied_in_seconds(
    serve: Serve, database: str, stopped_processes: list[psutil.Process]
) -> None:
    serve.extra_env = {"DATABASE_URL": database}
    operator = Operator(serve, database)
    operator.start()
    headers, account_id, instance = operator.customer_with_a_site()
    freeze(operator, instance, stopped_processes)

    operator.suspend(account_id, "admin")
    stuck = operator.kill_during("account.reconcile", account_id)

    operator.start(RESTART_BUDGET)
    operator.suspend(account_id, "abuse")  # the next admin action after the restart
    operator.until_status(headers, instance["id"], "stopped")
    assert operator.processes(instance) == []
    site = httpx.get(f"{operator.base}/", headers={"Host": f"{instance['slug']}.localhost:{serve.port}"}, timeout=10)
    assert site.status_code == 503

    # The dead worker's job is handed back (then runs to its end), and /metrics reports on job health.
    wait_for(lambda: operator.job_status(stuck) != "doing", EFFECT_BUDGET, "the stalled job to be recovered",
             interval=0.2)
    assert "job.stalled_retried" in serve.stderr_path.read_text()
    assert metric(operator.base, "jushostit_jobs_stalled ") == ["jushostit_jobs_stalled 0.0"]
    assert metric(operator.base, "# TYPE jushostit_jobs_oldest_age_seconds gauge")


def test_kill_9_during_the_resync_then_the_resync_keeps_its_schedule(
    serve: Serve, database: str, stopped_processes: list[psutil.Process]
) -> None:
    serve.extra_env = {"DATABASE_URL": database, "JUSHOSTIT_RESYNC_INTERVAL_SECONDS": "5"}
    operator = Operator(serve, database)
    operator.start()
    headers, account_id, instance = operator.customer_with_a_site()
    other_headers, _, other = operator.customer_with_a_site()
    freeze(operator, instance, stopped_processes)
    with psycopg.connect(database, autocommit=True) as connection:  # a hold whose reconcile request was lost
        connection.execute("UPDATE accounts SET suspension_reasons = '{admin}' WHERE id = %s", (account_id,))

    operator.kill_during("account.resync")

    operator.start(RESTART_BUDGET)
    operator.until_status(headers, instance["id"], "stopped")  # only a resync applies that hold
    assert operator.processes(instance) == []

    # A tenant process killed behind our back after the restart is brought back by a later resync.
    [victim] = operator.processes(other)
    os.killpg(victim.pid, signal.SIGKILL)
    wait_for(lambda: [p.pid for p in operator.processes(other)] not in ([], [victim.pid]), EFFECT_BUDGET,
             "a resync to start the killed process again", interval=0.2)
    operator.until_status(other_headers, other["id"], "running")

    def serving() -> bool:
        # A new process exists before it listens: the site is back once its health check recorded it.
        site = httpx.get(f"{operator.base}/", headers={"Host": f"{other['slug']}.localhost:{serve.port}"}, timeout=10)
        return site.status_code == 200

    wait_for(serving, EFFECT_BUDGET, "the restarted site to serve again", interval=0.2)
