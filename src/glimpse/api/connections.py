"""How many connections one API process takes, so that it can never run out of file descriptors.

Every connection, spooled upload and database connection holds a file descriptor; when they ran
out (600 slow uploads at once) requests failed with 500 and even /readyz could not open the
database. So `glimpse serve` raises the process's limit on open files as far as the system lets
it, keeps a reserve of it for the database, the workers' pipes and the spooled files, and caps
connections below the rest, in two layers:

- `ConnectionCap` (this middleware) answers requests past `max_connections` in progress with
  API.md's 503, `Retry-After` and `Connection: close`, before their bodies are read. The
  operations routes are not counted: a saturated process is still alive and ready.
- uvicorn's `limit_concurrency`, set a little higher, is the hard stop on open connections
  (idle keep-alive ones included). Past it uvicorn itself answers a plain-text 503 with
  `Connection: close` and no `Retry-After`; a middleware never sees those requests. The headroom
  between the two limits means that uvicorn's answer is only given when connections arrive
  faster than ours are closed.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from glimpse.api.errors import early_error_messages

log = logging.getLogger("glimpse.api")

# Not counted: they are cheap and answer whether the process lives and can serve.
OPERATIONS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
RETRY_AFTER_SECONDS = 5
# File descriptors kept for everything but client connections: the database's connections, the
# workers' pipes, logs, imported libraries' files.
RESERVED_FILE_DESCRIPTORS = 128
# An upload holds a spooled file and, while it is moved into the store, one more.
FILES_PER_UPLOAD = 2
# Opening more files than this is pointless even when the system allows it.
MOST_OPEN_FILES = 1 << 20


@dataclass(frozen=True)
class ConnectionPlan:
    app_limit: int  # requests in progress past which ConnectionCap answers 503
    server_limit: int  # open connections past which uvicorn answers its own 503


def plan_connections(open_files: int, max_connections: int, max_uploads: int) -> ConnectionPlan:
    """The two limits for a process that may hold `open_files` descriptors."""
    reserve = RESERVED_FILE_DESCRIPTORS + FILES_PER_UPLOAD * max_uploads
    headroom = max(8, max_connections // 10)
    server_limit = max(2, min(max_connections + headroom, open_files - reserve))
    app_limit = max(1, min(max_connections, server_limit - headroom))
    return ConnectionPlan(app_limit=app_limit, server_limit=server_limit)


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    soft = MOST_OPEN_FILES if soft == infinite else soft
    wanted = min(MOST_OPEN_FILES if hard == infinite else hard, MOST_OPEN_FILES)
    if soft >= wanted:
        return min(soft, MOST_OPEN_FILES)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open files limit from %d: %s", soft, exc)
        return soft
    return wanted


class Occupancy:
    """Requests in progress, shared by ConnectionCap and the media fast path (which answers
    before the cap's layer but counts against it the same)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    @property
    def full(self) -> bool:
        return self.active >= self.limit


class ConnectionCap:
    def __init__(self, app: ASGIApp, limit: int, occupancy: Occupancy | None = None) -> None:
        self.app = app
        self.occupancy = occupancy or Occupancy(limit)
        self.occupancy.limit = limit

    @property
    def active(self) -> int:
        return self.occupancy.active

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPERATIONS_PATHS:
            await self.app(scope, receive, send)
            return
        occupancy = self.occupancy
        if occupancy.full:
            for message in early_error_messages(
                503,
                "busy",
                "The server is at its limit of connections; please try again soon.",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ):
                await send(message)
            return
        occupancy.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            occupancy.active -= 1
