"""Leaving a proxy's rotation before stopping, for restarts that lose no request.

uvicorn stops accepting connections as soon as it gets SIGTERM. A proxy that keeps sending new
connections meanwhile sees them refused (it can try another process) or, for those already
queued in the listening socket's backlog, reset after the request was sent: a POST it must not
retry, so a failed request. With `shutdown_drain_seconds`, SIGTERM first turns /readyz to 503
(`"process": "draining"`) while the process goes on serving; a proxy that checks /readyz stops
sending it anything new, and only then does uvicorn's own graceful shutdown begin (finishing
the requests under way for up to `shutdown_grace_seconds`). A second SIGTERM, or SIGINT, stops
at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from glimpse.api.errors import error_response

log = logging.getLogger("glimpse.api")


def is_draining(app_state: Any) -> bool:
    return bool(getattr(app_state, "draining", False))


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app_state: Any, drain_seconds: float) -> None:
        super().__init__(config)
        self._app_state = app_state
        self._drain_seconds = drain_seconds
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._draining or self._drain_seconds <= 0:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self._app_state.draining = True
        log.info("draining for %.1f s before shutting down", self._drain_seconds)
        # (From a timer thread: uvicorn's main loop reads should_exit every tenth of a second.)
        timer = threading.Timer(self._drain_seconds, super().handle_exit, (sig, None))
        timer.daemon = True
        timer.start()


class RefuseWhenCutOff:
    """A request still under way when `shutdown_grace_seconds` runs out (a slow upload) is
    cancelled by uvicorn, which then answers 500: a server error for what is only a restart.
    Cancelled before its answer began, it is refused as any request the server cannot take now
    is (503 with Retry-After, API.md), after the request's own clean-up (its transaction rolled
    back, its spooled upload removed) has run on the way out. The cancellation ends here: the
    task was only cancelled to make it end, and it now ends with that answer."""

    RETRY_AFTER_SECONDS = 5

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            if started:
                raise
            log.warning(
                "refused %s %s: still under way when the shutdown grace ran out",
                scope.get("method"),
                scope.get("path"),
            )
            response = error_response(
                503,
                "unavailable",
                "The server is restarting; please try again in a moment.",
                headers={"Retry-After": str(self.RETRY_AFTER_SECONDS)},
                body_unread=True,
            )
            await response(scope, receive, send)
