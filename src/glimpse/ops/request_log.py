"""What every request leaves behind: its id (ops/request_ids.py) in `X-Request-ID`, its count and
latency in the metrics, and one log line.

One middleware for all three, so that the id, the status and the time agree, and a request pays
for one layer rather than three (BENCHMARKS.md, "The cost of operations").
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from glimpse.api.deps import CALLER_ID
from glimpse.ops.metrics import LATENCY, REQUESTS
from glimpse.ops.request_ids import REQUEST_ID, accepted_request_id, new_request_id

access_log = logging.getLogger("glimpse.access")
metrics_log = logging.getLogger("glimpse.metrics")

REQUEST_ID_HEADER = b"x-request-id"

# The request metrics' children by (method, route template, status), found once: `labels()`
# turns its arguments into strings, takes a lock and builds a key on every call, a fifth of
# what the metrics cost a request. Bounded by the routes, the methods the HTTP parser knows
# and the statuses; the cap is a guard, past it children are looked up as before.
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_MAX_CHILDREN = 10_000


class RequestLog:
    """`trust_incoming`: take the id a client sends in X-Request-ID (only behind a proxy that
    sets it; a client's own could otherwise pose as another request's). `log_requests`: write
    the line per request (GLIMPSE_ACCESS_LOG)."""

    def __init__(self, app: ASGIApp, *, trust_incoming: bool, log_requests: bool) -> None:
        self.app = app
        self.trust_incoming = trust_incoming
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = Headers(scope=scope).get("x-request-id") if self.trust_incoming else None
        request_id = accepted_request_id(given) or new_request_id()
        status = 500
        bytes_in = bytes_out = 0

        async def counting_receive() -> Message:
            nonlocal bytes_in
            message = await receive()
            bytes_in += len(message.get("body", b""))
            return message

        async def tagging_send(message: Message) -> None:
            nonlocal status, bytes_out
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                # (The app's own id header, if it set one, gives way to ours; rare: checked
                # before a new list is built.)
                if any(name.lower() == REQUEST_ID_HEADER for name, _ in headers):
                    headers = [h for h in headers if h[0].lower() != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message["headers"] = headers
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            await send(message)

        # The routes write the caller's id here (api/deps.py); made now so that a middleware
        # copying the scope copies the same dict rather than leaving its own out of our sight.
        scope.setdefault("state", {})
        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, counting_receive, tagging_send)
        finally:
            record_request(
                scope,
                route_template(scope),
                status,
                time.perf_counter() - started,
                bytes_in,
                bytes_out,
                log_requests=self.log_requests,
            )
            REQUEST_ID.reset(token)


def record_request(
    scope: Scope,
    template: str,
    status: int,
    elapsed: float,
    bytes_in: int,
    bytes_out: int,
    *,
    log_requests: bool,
) -> None:
    """Count a request in the metrics and write its line (while its id is still current, so
    that the line carries it). Also used by the media fast path (media/fast_path.py)."""
    method = scope["method"]
    try:  # (metrics.never_failing, without a context manager's calls on every request)
        counter, histogram = _metric_children(method, template, status)
        counter.inc()
        histogram.observe(elapsed)
    except Exception:
        metrics_log.warning("could not record a metric", exc_info=True)
    if log_requests and access_log.isEnabledFor(logging.INFO):
        # The route's template, never the path: a signed media URL's signature, a username or
        # a cursor have no place in a log.
        access_log.info(
            "%s %s %d",
            method,
            template,
            status,
            extra={
                "fields": {
                    "method": method,
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    # (A string, as the API gives ids: JSON tools read big numbers as doubles,
                    # and 64-bit ids would lose their last digits.)
                    "user_id": _as_text(scope.get("state", {}).get(CALLER_ID)),
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                },
            },
        )


def _metric_children(method: str, template: str, status: int) -> tuple[Any, Any]:
    key = (method, template, status)
    children = _children.get(key)
    if children is None:
        children = (
            REQUESTS.labels(method, template, str(status)),
            LATENCY.labels(method, template),
        )
        if len(_children) < _MAX_CHILDREN:
            _children[key] = children
    return children


def _as_text(value: object) -> str | None:
    return None if value is None else str(value)


def route_template(scope: Scope) -> str:
    # A label per route, never per URL: FastAPI's routes put themselves in the scope; the few
    # plain Starlette ones that matched (/docs, /openapi.json) have no parameters, so their
    # path is their template.
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "unmatched"))
    return str(scope["path"]) if "endpoint" in scope else "unmatched"
