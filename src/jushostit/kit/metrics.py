"""Prometheus metrics: HTTP requests by route template, and jobs by status."""

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
