"""A cap on request bodies, enforced before they are read.

FastAPI reads a JSON body whole before validating it, so an 800 MB body to a route that takes a
username costs 800 MB (and more) of memory. Every request but the streamed uploads (which count
and cap their own bytes, file by file, in posts/upload.py) is held here to a small cap: one that
declares a larger Content-Length is refused before any of its body is read, and a chunked one
the moment its bytes pass the cap, having buffered no more than that.

The refusal is API.md's 413 with `Connection: close`: the rest of the body is never read, so the
connection cannot carry another request. For the same reason any error answered before the body
was read to its end (a 401 to an upload without a token, a 404 to a POST) says
`Connection: close` too, whichever handler answered it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from glimpse.api.errors import as_page_where_browsed, error_response

if TYPE_CHECKING:
    from glimpse.config import Settings

# The routes that stream their bodies to disk under limits of their own. (Stories will join.)
STREAMED_UPLOADS: frozenset[tuple[str, str]] = frozenset(
    {("POST", "/api/v1/posts"), ("POST", "/api/v1/stories")}
)


class BodyTooLarge(Exception):
    pass


def json_body_deadline(settings: Settings) -> float:
    """How long a capped body may take to arrive whole: the uploads' grace, then the largest
    such body at the uploads' minimum rate (10 s + 64 KB at 10 KB/s = 16.4 s by default); with
    no minimum rate, the uploads' deadline."""
    rate = settings.upload_min_rate_bytes_per_second
    if rate <= 0:
        return settings.upload_deadline_seconds
    return min(
        settings.upload_deadline_seconds,
        settings.upload_min_rate_grace_seconds + settings.max_json_body_bytes / rate,
    )


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses such a request before it reaches us
    return None


def _is_chunked(scope: Scope) -> bool:
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        idle_timeout: float = 60.0,
        deadline: float | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # A capped body that stops arriving for this long is answered 400 `upload_stalled`, as
        # an upload is: else a client that declares 1,000 bytes and sends 10 holds a
        # connection (and one of the per-client slots) for as long as it likes.
        self.idle_timeout = idle_timeout
        # And one that has not arrived whole within `deadline` of its request is answered 400
        # `upload_too_slow`: a byte sent every 59 s never stalls, and held a slot for the 44
        # days its 64 KB would take (an attack filled all 1,000 slots from four addresses).
        self.deadline = deadline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        capped = (scope["method"], scope["path"]) not in STREAMED_UPLOADS
        declared = _declared_length(scope)
        if capped and declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send, *self._too_large())
            return

        received = 0
        complete = not (declared or _is_chunked(scope))
        started = False
        refused = False
        loop = asyncio.get_running_loop()
        # (A request with no body to wait for, nearly every GET, needs no deadline.)
        due = (
            loop.time() + self.deadline
            if capped and not complete and self.deadline is not None
            else None
        )

        async def counting_receive() -> Message:
            nonlocal received, complete, refused
            if refused:
                return {"type": "http.disconnect"}
            if capped and not complete:
                left = due - loop.time() if due is not None else self.idle_timeout
                try:
                    message = await asyncio.wait_for(
                        receive(), max(0.0, min(self.idle_timeout, left))
                    )
                except TimeoutError:
                    refused = True
                    if not started:
                        too_slow = due is not None and loop.time() >= due
                        await self._refuse(
                            scope,
                            send,
                            400,
                            "upload_too_slow" if too_slow else "upload_stalled",
                            "The request body arrived too slowly."
                            if too_slow
                            else "The request body stopped arriving.",
                        )
                    return {"type": "http.disconnect"}
            else:
                message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if not message.get("more_body", False):
                    complete = True
                if capped and received > self.max_bytes:
                    # Answered from here, while the app waits for the body; to the app the
                    # client has gone, and whatever it answers to that is dropped.
                    refused = True
                    if not started:
                        await self._refuse(scope, send, *self._too_large())
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
                if not complete and message["status"] >= 400:
                    MutableHeaders(scope=message)["Connection"] = "close"
            await send(message)

        await self.app(scope, counting_receive, guarded_send)

    def _too_large(self) -> tuple[int, str, str]:
        return (
            413,
            "body_too_large",
            f"The request body may be at most {self.max_bytes // 1024} KB.",
        )

    async def _refuse(self, scope: Scope, send: Send, status: int, code: str, message: str) -> None:
        response = as_page_where_browsed(
            Request(scope), error_response(status, code, message, body_unread=True)
        )
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": response.body})
