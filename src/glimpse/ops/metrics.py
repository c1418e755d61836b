"""Prometheus metrics, shared by the API and the worker processes.

`glimpse serve` points PROMETHEUS_MULTIPROC_DIR at a folder in the data directory before any
of its processes imports prometheus_client, so that the API's /metrics also shows what its
workers did. A process started alone (tests, `glimpse worker` on another host) keeps its
metrics in its own memory.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Container, Iterator
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

from glimpse.ops.metrics_files import reserve_before_writing

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger("glimpse.metrics")

reserve_before_writing()  # (before the first metric: a full /dev/shm must not kill the process)

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

JOBS_ENQUEUED = Counter(
    "glimpse_jobs_enqueued_total",
    "Jobs added to the outbox with the transaction that needed them (rolled back ones included)",
    ["name"],
)
# Set when /metrics is scraped (from the jobs table, whatever the queue backend).
OLDEST_DUE_JOB = Gauge(
    "glimpse_jobs_oldest_due_age_seconds",
    "How long the job that has waited longest since it became due has been waiting",
    multiprocess_mode="mostrecent",
)
UPLOADS = Counter("glimpse_uploads_total", "Uploads accepted (202), by post kind", ["kind"])
UPLOAD_FILES = Counter(
    "glimpse_upload_files_total", "Files in accepted uploads, by media kind", ["media"]
)
UPLOAD_BYTES = Counter("glimpse_upload_bytes_total", "Bytes of files in accepted uploads")
FEED_READS = Counter("glimpse_feed_reads_total", "Home feed pages served, by order", ["order"])
FEED_CACHE = Counter(
    "glimpse_feed_cache_total",
    "Looks into the materialised feed: hit, miss (rebuilt from the database), or fallback"
    " (the cache could not be used; answered from the database)",
    ["result"],
)
FEED_KEPT_PAGES = Counter(
    "glimpse_feed_kept_pages_total",
    "First pages of the feed: served again as kept (kept), kept for longer as nothing on them"
    " changed (renewed), or built (built)",
    ["result"],
)
FEED_REBUILD_SECONDS = Histogram(
    "glimpse_feed_rebuild_duration_seconds",
    "Time to rebuild one missing feed from the database",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
FANOUT_BATCHES = Counter("glimpse_fanout_batches_total", "Batches of feeds a post was pushed to")
FANOUT_FEEDS = Counter("glimpse_fanout_feeds_total", "Feeds posts were pushed into")
FANOUT_BATCH_SECONDS = Histogram(
    "glimpse_fanout_batch_duration_seconds",
    "Time to push a post into one batch of feeds",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
STORIES_ARCHIVED = Counter(
    "glimpse_stories_archived_total", "Expired stories archived by the reaper"
)
STORY_FILES_RELEASED = Counter(
    "glimpse_story_variants_released_total",
    "Variants of expired stories no highlight holds, handed to a purge",
)
THROTTLED = Counter(
    "glimpse_throttled_total", "Requests refused (429) because a budget was spent", ["budget"]
)
BACKEND_UP = Gauge(
    "glimpse_backend_up",
    "1 when the backend answered /readyz's last round trip, 0 when it did not",
    ["backend"],
    multiprocess_mode="mostrecent",
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


# Headers a reverse proxy adds: a request with them came from elsewhere, whatever its socket.
_FORWARDED_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def _is_loopback(host: str | None) -> bool:
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def from_this_machine(client: str | None, headers: Container[str]) -> bool:
    """A loopback peer with no forwarding headers: who may read metrics without a token."""
    return _is_loopback(client) and not any(h in headers for h in _FORWARDED_HEADERS)
