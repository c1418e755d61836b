"""Operations: liveness, readiness (a real round trip to every backend) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
import logging
import shutil
import weakref
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy.engine import make_url

from glimpse.api.deps import ContainerDep
from glimpse.api.draining import is_draining
from glimpse.api.errors import error_responses
from glimpse.container import Container
from glimpse.db.database import Database
from glimpse.db.migrate import head_revision
from glimpse.errors import NotFound, Unauthenticated
from glimpse.ops.metrics import (
    BACKEND_UP,
    JOBS,
    OLDEST_DUE_JOB,
    exposition,
    from_this_machine,
    never_failing,
)

router = APIRouter(tags=["operations"])
log = logging.getLogger("glimpse.ops")

# A backend that hangs must not hang /readyz past its deadline (API.md: 15 s).
CHECK_TIMEOUT_SECONDS = 5.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


def _migrations_head() -> str:
    # head_revision() reads the scripts once per process, so that running out of file
    # descriptors later cannot make it "None" (which once read as "not at head None").
    head = head_revision()
    if head is None:
        raise RuntimeError("cannot read the migration scripts")
    return head


async def _check_database(container: Container) -> None:
    head = _migrations_head()
    try:
        revision = await container.db.schema_revision()
    except Exception as exc:
        # SQLAlchemy's message carries the SQL and a link; the driver's says what went wrong.
        reason = getattr(exc, "orig", None) or exc
        raise RuntimeError(f"cannot open the database: {reason}") from exc
    if revision != head:
        raise RuntimeError(f"migrations are at {revision}, not at head {head}")
    await asyncio.to_thread(_check_database_disk, container)
    try:
        await container.db.check_write()
    except Exception as exc:
        reason = getattr(exc, "orig", None) or exc
        raise RuntimeError(f"cannot write to the database: {reason}") from exc


def _check_database_disk(container: Container) -> None:
    # A full disk still answers reads (and this check's round trip): an embedded database is
    # "unavailable" below the same free-space floor as the store, before writes start failing.
    settings = container.settings
    floor = settings.storage_free_bytes_floor
    database = make_url(settings.resolved_database_url).database if settings.is_sqlite else None
    if not database:
        return
    # An embedded database whose file was removed (or replaced) is still read and written
    # through the connections opened before, into a file nobody will ever see again.
    path = Path(database).resolve()
    try:
        identity = path.stat().st_ino
    except FileNotFoundError:
        raise RuntimeError(f"the database file {path} is gone") from None
    opened = _database_files.setdefault(container.db, identity)
    if identity != opened:
        raise RuntimeError(f"the database file {path} was replaced since this process opened it")
    if not floor:
        return
    free = shutil.disk_usage(path.parent).free
    if free < floor:
        raise RuntimeError(
            f"the database's disk has {free // 2**20} MB free, below the floor of"
            f" {floor // 2**20} MB"
        )


# The inode of each open SQLite database's file, as first seen.
_database_files: weakref.WeakKeyDictionary[Database, int] = weakref.WeakKeyDictionary()

_REPLICA = "database_replica_"


def _replica_checks(container: Container) -> list[Any]:
    replicas = container.db.replicas
    if replicas is None:
        return []
    return [_run_check(f"{_REPLICA}{n}", replicas.check(n)) for n in range(len(replicas.engines))]


async def _run_check(name: str, check: Any) -> tuple[str, str]:
    try:
        await asyncio.wait_for(check, CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return name, "timed out"
    except Exception as exc:
        return name, f"failed: {exc}"[:300]
    return name, "ok"


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "a backend does not answer",
            "content": {
                "application/json": {
                    "example": {
                        "status": "unavailable",
                        "checks": {
                            "database": "ok",
                            "storage": "failed: No space left on device",
                            "queue": "ok",
                        },
                    }
                }
            },
        }
    },
)
async def readyz(request: Request, container: ContainerDep) -> JSONResponse:
    """Every configured backend answers a real round trip and the schema is at head."""
    if is_draining(request.app.state):  # shutting down: out of the proxy's rotation first
        return JSONResponse(
            {"status": "unavailable", "checks": {"process": "draining: shutting down"}},
            status_code=503,
        )
    checks = await _shared_checks(request.app.state, container)
    # A replica that is down only sends its reads to the primary: reported, but still ready.
    ready = all(v == "ok" for k, v in checks.items() if not k.startswith(_REPLICA))
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


# The round trips under way, per app (on its state): /readyz asked again before they end (several
# proxies, each every second) waits for them instead of starting more, so its answer is at
# most one check's time (CHECK_TIMEOUT_SECONDS) old, well within API.md's 15 s, and nothing is
# kept once they end. A database whose write lock is held then does not collect one more
# waiting write transaction (each holding a pooled connection) per probe.
_IN_FLIGHT = "readiness_checks_in_flight"


async def _shared_checks(app_state: Any, container: Container) -> dict[str, str]:
    task: asyncio.Task[dict[str, str]] | None = getattr(app_state, _IN_FLIGHT, None)
    if task is None or task.done():
        task = asyncio.ensure_future(_all_checks(container))
        setattr(app_state, _IN_FLIGHT, task)
    # Shielded: a prober that hangs up must not cancel the round trips the others wait for.
    return await asyncio.shield(task)


async def _all_checks(container: Container) -> dict[str, str]:
    checks_to_run = [
        _run_check("database", _check_database(container)),
        # The store's check also fails below the free-space floor (backends/storage/local.py).
        _run_check("storage", container.storage.check()),
        _run_check("queue", container.queue.check()),
        *_replica_checks(container),
    ]
    if container.settings.cache_url:  # the embedded feed store is the database's tables
        checks_to_run.append(_run_check("cache", container.feed_store.check()))
    results = await asyncio.gather(*checks_to_run)
    checks = dict(results)
    with never_failing():
        for backend, verdict in checks.items():
            BACKEND_UP.labels(backend).set(1 if verdict == "ok" else 0)
    return checks


def _check_metrics_access(request: Request, token: str) -> None:
    # Metrics name routes, volumes and failures: an attacker's map. Refused as "not found"
    # where no token is set, as there is nothing to ask for.
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise Unauthenticated("/metrics needs its bearer token.", code="unauthenticated")
        return
    if not from_this_machine(request.client.host if request.client else None, request.headers):
        raise NotFound("Not found.")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "metrics"},
        **error_responses(401, 404),
    },
)
async def metrics(request: Request, container: ContainerDep) -> Response:
    """Prometheus text format. With `GLIMPSE_METRICS_TOKEN` set, for `Authorization: Bearer
    <token>` only; without it, for clients on this machine only."""
    _check_metrics_access(request, container.settings.metrics_token)
    try:
        counts = await container.queue.state_counts()
        for state in ("queued", "scheduled", "running", "dead"):
            JOBS.labels(state).set(counts.get(state, 0))
        OLDEST_DUE_JOB.set(await container.queue.oldest_due_age())
    except Exception:  # metrics must answer even when the database does not
        log.warning("could not count jobs for /metrics", exc_info=True)
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
