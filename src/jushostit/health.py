"""Probes and metrics: /healthz (the process answers), /readyz (database reachable, migrations at head), /metrics.

/readyz answers 503 in the error contract's shape (code `not_ready`), like every other error."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from jushostit.auth.dependencies import public
from jushostit.kit import jobs, metrics, migrate
from jushostit.kit.errors import ErrorResponse, error_payload
from jushostit.metering.repository import MeteringRepository

router = APIRouter(tags=["health"], dependencies=[Depends(public())])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


class Ready(BaseModel):
    status: Literal["ready"]
    revision: str | None = Field(description="The database's migration revision (the code's head)")


NOT_READY = (
    "Not ready, in the error shape: code `not_ready`, `details.status` `unavailable` (the database cannot be "
    "reached; `details.database` names the error type) or `migrating` (`details.revision` is not yet "
    "`details.head`)."
)


def not_ready(message: str, details: dict[str, Any]) -> JSONResponse:
    return JSONResponse(error_payload("not_ready", message, details), status_code=503)


@router.get("/readyz", response_model=Ready, responses={503: {"model": ErrorResponse, "description": NOT_READY}})
async def readyz(request: Request) -> JSONResponse:
    database = request.app.state.database
    try:
        current = await migrate.current_revision(database.engine)
    except Exception as error:  # noqa: BLE001 - any failure to reach the database means not ready
        return not_ready("The database cannot be reached", {"status": "unavailable", "database": type(error).__name__})
    head = migrate.head_revision()
    if current != head:
        return not_ready(
            "The database is not migrated to this version", {"status": "migrating", "revision": current, "head": head}
        )
    return JSONResponse({"status": "ready", "revision": current})


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    async with request.app.state.database.reader() as session:
        counts = await jobs.counts_by_task_and_status(session)
        ages = await jobs.oldest_ages(session)
        stalled = await jobs.stalled_count(session)
        collectors = await MeteringRepository(session).collector_health()
    metrics.jobs_by_status.clear()
    for task, status, count in counts:
        metrics.jobs_by_status.labels(task=task, status=status).set(count)
    metrics.jobs_oldest_age.clear()
    for task, status, age in ages:
        metrics.jobs_oldest_age.labels(task=task, status=status).set(age)
    metrics.jobs_stalled.set(stalled)
    metrics.metering_read_until.clear()
    metrics.metering_last_run_failed.clear()
    for run, read_until in collectors:
        labels = {"collector": run.collector, "scope": run.scope}
        if read_until is not None:
            metrics.metering_read_until.labels(**labels).set(read_until.timestamp())
        metrics.metering_last_run_failed.labels(**labels).set(int(run.status == "failed"))
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
