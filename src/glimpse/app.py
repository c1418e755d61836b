"""The app factory: wires settings, backends and every slice's routes into one FastAPI app."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from glimpse import __version__
from glimpse.accounts.routes import router as accounts_router
from glimpse.api.body_limit import BodyLimit, json_body_deadline
from glimpse.api.connections import ConnectionCap, Occupancy
from glimpse.api.docs import router as docs_router
from glimpse.api.draining import RefuseWhenCutOff
from glimpse.api.errors import ERROR_PAGE, install_error_handlers
from glimpse.api.head import HeadAsGet
from glimpse.api.security_headers import SecurityHeaders
from glimpse.api.throttling import ThrottleMiddleware
from glimpse.config import Settings
from glimpse.container import Container, build_container
from glimpse.engagement.routes import router as engagement_router
from glimpse.feed.routes import router as feed_router
from glimpse.graph.routes import router as graph_router
from glimpse.media.fast_path import MediaFastPath
from glimpse.media.origin import router as media_router
from glimpse.ops.request_log import RequestLog
from glimpse.ops.routes import router as ops_router
from glimpse.posts.routes import router as posts_router
from glimpse.privacy.routes import router as privacy_router
from glimpse.stories.routes import router as stories_router
from glimpse.web.rendering import error_page
from glimpse.web.routes import router as web_router


class GlimpseApp(FastAPI):
    """FastAPI with the media fast path in front of it."""

    media_fast_path: MediaFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.media_fast_path
        if fast is not None and fast.takes(scope):
            scope["app"] = self
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def full_stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every layer, as any other request gets (where the fast path hands a request on)."""
        await super().__call__(scope, receive, send)


_frozen = False


def _freeze_start_up() -> None:
    """What start-up made (modules, the app, its models: some 125k objects) lives as long as
    the process: moved out of the collector's sight, a full collection no longer walks it
    (77-500 ms each, the feed's p99 at half its peak rate; bench/bench_feed.py)."""
    global _frozen
    # Once a process: the collection before the freeze walks every object there is (0.2 s in a
    # test process, once an app), and what a later app in the same process makes (tests start
    # hundreds) is its own to collect.
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> GlimpseApp:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        container: Container = build_container(settings)
        await container.start()
        app.state.container = container
        _freeze_start_up()
        try:
            yield
        finally:
            await container.close()

    app = GlimpseApp(
        # Glimpse's metrics are Prometheus's (ops/metrics.py). FastAPI's OpenTelemetry hooks,
        # with no provider configured, still asked for one on every request: 16 us of a
        # media answer's 29 us in the app (bench/bench_edge.py).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="Glimpse",
        version=__version__,
        description="Self-hostable photo and video sharing.",
        lifespan=lifespan,
        # Our own /docs (api/docs.py): no CDN, a strict CSP. No ReDoc.
        docs_url=None,
        redoc_url=None,
        # A path with a stray slash is a 404, not a redirect that would echo the Host header
        # back as an absolute Location (an open redirect for whoever controls that header).
        redirect_slashes=False,
    )
    install_error_handlers(app)
    # The web app's paths get their errors as pages (api/errors.py asks for this).
    setattr(app.state, ERROR_PAGE, error_page)
    # The last added runs outermost.
    app.add_middleware(ThrottleMiddleware)  # inside the metrics: a 429 is counted as one
    app.add_middleware(HeadAsGet, router=app.router)  # inside the metrics: a HEAD counts as HEAD
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_json_body_bytes,
        idle_timeout=settings.upload_idle_timeout_seconds,
        deadline=json_body_deadline(settings),
    )
    occupancy = Occupancy(settings.max_connections)
    app.add_middleware(ConnectionCap, limit=settings.max_connections, occupancy=occupancy)
    # Inside the request log: a request cut off by the end of the shutdown grace is logged
    # (and counted) as the 503 it gets.
    app.add_middleware(RefuseWhenCutOff)
    # Outside the connection cap: its refusals are counted, logged and given an id too.
    app.add_middleware(
        RequestLog,
        trust_incoming=settings.trusted_proxy_hops > 0,
        log_requests=settings.access_log,
    )
    app.add_middleware(SecurityHeaders)  # on every answer, the refusals above too
    # In front of everything, FastAPI's own layers too: media requests, most of all, skip
    # every layer above (media/fast_path.py does what they owe a media answer itself).
    app.media_fast_path = MediaFastPath(
        app.full_stack,
        trust_incoming=settings.trusted_proxy_hops > 0,
        log_requests=settings.access_log,
        occupancy=occupancy,
    )
    # The media origin first: it takes the most requests, and routes are matched in order.
    for router in (
        media_router,
        feed_router,
        accounts_router,
        graph_router,
        posts_router,
        engagement_router,
        stories_router,
        privacy_router,
        ops_router,
        docs_router,
        web_router,  # last: its /{username} takes any path of one segment left
    ):
        app.include_router(router)
    return app
