"""Prometheus metrics, shared by the API and the worker processes.

`glimpse serve` points PROMETHEUS_MULTIPROC_DIR at a folder in the data directory before any
of its processes imports prometheus_client, so that the API's /metrics also shows what its
workers did. A process started alone (tests, `glimpse worker` on another host) keeps its
metrics in its own memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger("glimpse.metrics")

REQUESTS = Counter(
    "glimpse_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
LATENCY = Histogram(
    "glimpse_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# Counted by the API process when scraped; "mostrecent" keeps one value across processes.
JOBS = Gauge(
    "glimpse_jobs",
    "Jobs in the queue: queued (due), scheduled (due later), running, dead",
    ["state"],
    multiprocess_mode="mostrecent",
)
JOBS_RUN = Counter(
    "glimpse_jobs_run_total",
    "Jobs run by workers, by how the run ended (done, retried, dead, returned)",
    ["name", "outcome"],
)
JOB_SECONDS = Histogram(
    "glimpse_job_duration_seconds",
    "Time a worker spent on one run of a job",
    ["name"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def exposition() -> bytes:
    """Every metric in the Prometheus text format, from all of serve's processes if shared."""
    if os.environ.get(MULTIPROCESS_ENV):
        try:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        except (OSError, ValueError):
            # The shared folder went away under us: this process's own metrics still answer.
            log.warning("shared metrics are unreadable; answering this process's", exc_info=True)
    return generate_latest(REGISTRY)


@contextmanager
def never_failing() -> Iterator[None]:
    """Around metric updates: losing a sample is better than failing the request or job."""
    try:
        yield
    except Exception:
        log.warning("could not record a metric", exc_info=True)
