"""Prometheus metrics: HTTP requests by route template, jobs by status and age, reconcile failures, how far\nthe usage collectors have read."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

registry = CollectorRegistry()

http_requests = Counter(
    "jushostit_http_requests", "HTTP requests handled", ["method", "route", "status"], registry=registry
)
http_latency = Histogram(
    "jushostit_http_request_duration_seconds", "HTTP request latency", ["method", "route"], registry=registry
)
jobs_by_status = Gauge("jushostit_jobs", "Background jobs by task and status", ["task", "status"], registry=registry)
jobs_oldest_age = Gauge(
    "jushostit_jobs_oldest_age_seconds",
    "Age of the oldest job by task and status: since it was due (todo) or started (doing)",
    ["task", "status"],
    registry=registry,
)
jobs_stalled = Gauge(
    "jushostit_jobs_stalled", "Running jobs whose worker stopped sending heartbeats (recovered automatically)",
    registry=registry,
)
reconcile_failures = Counter(
    "jushostit_reconcile_failures", "Account reconcile passes that failed (retried with backoff)", ["path"],
    registry=registry,
)
reconcile_passes = Counter(
    "jushostit_reconcile_passes", "Account reconcile passes by path", ["path"], registry=registry
)
metering_read_until = Gauge(
    "jushostit_metering_read_until_seconds",
    "End of the last successful window of each usage collector and scope (Unix time): alert when it falls behind",
    ["collector", "scope"], registry=registry,
)
metering_last_run_failed = Gauge(
    "jushostit_metering_last_run_failed", "1 when the last run of a usage collector and scope failed, else 0",
    ["collector", "scope"], registry=registry,
)
