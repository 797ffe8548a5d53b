"""Probes and metrics: /healthz (the process answers), /readyz (database reachable, migrations at head), /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from jushostit.auth.dependencies import public
from jushostit.kit import jobs, metrics, migrate

router = APIRouter(tags=["health"], dependencies=[Depends(public())])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready"}})
async def readyz(request: Request) -> JSONResponse:
    database = request.app.state.database
    try:
        current = await migrate.current_revision(database.engine)
    except Exception as error:  # noqa: BLE001 - any failure to reach the database means not ready
        return JSONResponse({"status": "unavailable", "database": type(error).__name__}, status_code=503)
    head = migrate.head_revision()
    if current != head:
        return JSONResponse({"status": "migrating", "revision": current, "head": head}, status_code=503)
    return JSONResponse({"status": "ready", "revision": current})


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    async with request.app.state.database.reader() as session:
        counts = await jobs.counts_by_task_and_status(session)
        ages = await jobs.oldest_ages(session)
        stalled = await jobs.stalled_count(session)
    metrics.jobs_by_status.clear()
    for task, status, count in counts:
        metrics.jobs_by_status.labels(task=task, status=status).set(count)
    metrics.jobs_oldest_age.clear()
    for task, status, age in ages:
        metrics.jobs_oldest_age.labels(task=task, status=status).set(age)
    metrics.jobs_stalled.set(stalled)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
