"""Probes and metrics: /healthz, /readyz (database reachable, migrations at head), /metrics (Prometheus)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete

from jushostit.app import create_app
from jushostit.kit import jobs, migrate
from jushostit.kit.db import Database, libpq_url
from jushostit.metering import service
from jushostit.metering.readings import Collected
from jushostit.models import MeteringRun
from jushostit.notifications.tasks import deliver_email
from tests.conftest import asgi_client


async def scrape(client: Any) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    return response.text, samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_healthz(client) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


async def test_readyz_reports_the_head_revision(client) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "revision": migrate.head_revision()}


async def test_readyz_is_503_when_the_database_cannot_be_reached(settings, container) -> None:
    app = create_app(settings, container=container)
    app.state.database = Database.from_url("postgresql://postgres@127.0.0.1:1/nothing", pool_size=1)
    try:
        async with asgi_client(app) as c:
            response = await c.get("/readyz")
            alive = await c.get("/healthz")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "not_ready"
        assert response.json()["error"]["details"]["status"] == "unavailable"
        assert alive.status_code == 200  # the process itself is fine: liveness does not depend on the database
    finally:
        await app.state.database.engine.dispose()


async def test_readyz_is_503_until_migrations_reach_head(settings, container) -> None:
    from sqlalchemy.engine import make_url

    name = f"jushostit_unmigrated_{uuid.uuid4().hex[:8]}"
    admin = libpq_url(settings.database_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(settings.database_url).set(database=name).render_as_string(hide_password=False)
    app = create_app(settings, container=container)
    app.state.database = Database.from_url(url, pool_size=1)
    try:
        async with asgi_client(app) as c:
            response = await c.get("/readyz")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "not_ready"
        assert response.json()["error"]["details"] == {"status": "migrating", "revision": None, "head": migrate.head_revision()}
    finally:
        await app.state.database.engine.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def test_request_metrics_are_labelled_by_route_template(client, signup) -> None:
    user = await signup()
    stranger = uuid.uuid4()
    template = "/v1/accounts/{account_id}"
    _, before = await scrape(client)

    assert (await client.get(f"/v1/accounts/{user.account_id}", headers=user.headers)).status_code == 200
    assert (await client.get(f"/v1/accounts/{user.account_id}", headers=user.headers)).status_code == 200
    assert (await client.get(f"/v1/accounts/{stranger}", headers=user.headers)).status_code == 404
    assert (await client.get(f"/no/such/path/{stranger}")).status_code == 404

    text, after = await scrape(client)
    assert "# TYPE jushostit_http_requests_total counter" in text
    ok = {"method": "GET", "route": template, "status": "200"}
    missing = {"method": "GET", "route": template, "status": "404"}
    assert value(after, "jushostit_http_requests_total", **ok) - value(before, "jushostit_http_requests_total", **ok) == 2
    assert (
        value(after, "jushostit_http_requests_total", **missing)
        - value(before, "jushostit_http_requests_total", **missing)
        == 1
    )
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert (
        value(after, "jushostit_http_requests_total", **unmatched)
        - value(before, "jushostit_http_requests_total", **unmatched)
        == 1
    )
    # Concrete ids never become label values (unbounded cardinality).
    assert user.account_id not in text and str(stranger) not in text

    # Latency histogram by method and route template: buckets, count and sum all moved.
    route = {"method": "GET", "route": template}
    count = "jushostit_http_request_duration_seconds_count"
    assert value(after, count, **route) - value(before, count, **route) == 3
    bucket = "jushostit_http_request_duration_seconds_bucket"
    assert value(after, bucket, **route, le="+Inf") - value(before, bucket, **route, le="+Inf") == 3
    total = "jushostit_http_request_duration_seconds_sum"
    assert value(after, total, **route) > value(before, total, **route)
    assert "# TYPE jushostit_http_request_duration_seconds histogram" in text


async def test_job_counts_by_status(client, container) -> None:
    _, before = await scrape(client)
    todo = {"task": "email.deliver", "status": "todo"}
    job_ids = [await deliver_email.defer_async(email_id=str(uuid.uuid4())) for _ in range(2)]
    try:
        text, after = await scrape(client)
        assert "# TYPE jushostit_jobs gauge" in text
        assert value(after, "jushostit_jobs", **todo) - value(before, "jushostit_jobs", **todo) == 2
        statuses = {dict(labels)["status"] for name, labels in after if name == "jushostit_jobs"}
        assert statuses <= {"todo", "doing", "succeeded", "failed", "cancelled", "aborting", "aborted"}
    finally:
        for job_id in job_ids:
            await jobs.app.job_manager.cancel_job_by_id_async(job_id, delete_job=True)
    _, cleaned = await scrape(client)
    assert value(cleaned, "jushostit_jobs", **todo) == value(before, "jushostit_jobs", **todo)


async def test_how_far_each_usage_collector_has_read_and_whether_its_last_run_failed(client, container) -> None:
    scope = f"metrics-{uuid.uuid4().hex[:8]}"
    read_until = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    async with container.database.unit_of_work() as session:  # /metrics reads committed runs
        await service.record_collection(session, collector="prometheus", scope=scope,
                                        window=(read_until - timedelta(minutes=5), read_until),
                                        collected=Collected([], []), started_at=read_until, now=read_until)
        await service.record_failure(session, collector="prometheus", scope=scope,
                                     window=(read_until, read_until + timedelta(minutes=5)),
                                     error="connection refused", started_at=read_until + timedelta(minutes=5),
                                     now=read_until + timedelta(minutes=5))
    try:
        text, samples = await scrape(client)
    finally:
        async with container.database.unit_of_work() as session:
            await session.execute(delete(MeteringRun).where(MeteringRun.scope == scope))
    labels = {"collector": "prometheus", "scope": scope}
    assert "# TYPE jushostit_metering_read_until_seconds gauge" in text
    assert value(samples, "jushostit_metering_read_until_seconds", **labels) == read_until.timestamp()
    assert value(samples, "jushostit_metering_last_run_failed", **labels) == 1
