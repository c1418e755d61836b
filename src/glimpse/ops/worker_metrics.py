"""`glimpse worker`'s own /metrics (GLIMPSE_WORKER_METRICS_PORT), for workers on hosts of their
own: the jobs it ran, and the queue's depth and age as it sees them every few seconds.

A small Starlette app in the worker's event loop; a worker has no other HTTP to share it with.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from glimpse.container import Container
from glimpse.ops.metrics import JOBS, OLDEST_DUE_JOB, exposition, from_this_machine

log = logging.getLogger("glimpse.metrics")

# How often the queue's gauges are read from the database: a scrape interval's worth.
QUEUE_GAUGES_SECONDS = 15.0


def metrics_app(token: str) -> Starlette:
    async def metrics(request: Request) -> Response:
        if token:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                return PlainTextResponse("/metrics needs its bearer token\n", status_code=401)
        elif not from_this_machine(
            request.client.host if request.client else None, request.headers
        ):
            # As the API's /metrics: without a token, for this machine only, whatever address
            # GLIMPSE_WORKER_METRICS_HOST binds (an attacker's map otherwise).
            return PlainTextResponse("Not found\n", status_code=404)
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", metrics)])


async def update_queue_gauges(container: Container) -> None:
    counts = await container.queue.state_counts()
    for state in ("queued", "scheduled", "running", "dead"):
        JOBS.labels(state).set(counts.get(state, 0))
    OLDEST_DUE_JOB.set(await container.queue.oldest_due_age())


@contextlib.asynccontextmanager
async def serving_metrics(container: Container) -> AsyncIterator[None]:
    """Serve /metrics on the configured port while the block runs (nothing when it is 0)."""
    settings = container.settings
    if not settings.worker_metrics_port:
        yield
        return
    config = uvicorn.Config(
        metrics_app(settings.metrics_token),
        host=settings.worker_metrics_host,
        port=settings.worker_metrics_port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    gauges = asyncio.create_task(_keep_queue_gauges(container))
    try:
        yield
    finally:
        gauges.cancel()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await gauges
        await serving


async def _keep_queue_gauges(container: Container) -> None:
    while True:
        try:
            await update_queue_gauges(container)
        except Exception:
            log.warning("could not read the queue's depth for /metrics", exc_info=True)
        await asyncio.sleep(QUEUE_GAUGES_SECONDS)
