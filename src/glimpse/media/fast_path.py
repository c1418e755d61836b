"""The media origin's lean path: GET and HEAD of /media/{key} answered in front of the app
(app.py's GlimpseApp), before FastAPI's and our middlewares, routing and dependency injection.

Most requests a photo service answers are for media, and through the full stack each paid for
six middleware layers, a walk of the routing table and FastAPI's parameter handling: 10% of
nginx's rate on the same file (BENCHMARKS.md, issue 19). This layer takes a media request
straight to `origin.answer_media`, the same function the FastAPI route calls (so the same
visibility and signature checks, the same in-memory copies of small files), and does itself
what the skipped layers owe every answer:

- the request id (`X-Request-ID`, a trusted proxy's own when it sent one), `nosniff`, and no
  `Server` header (none is set here);
- its count and latency in the metrics and its access log line, under the route's template;
- a place under the connection cap: when the process is at `GLIMPSE_MAX_CONNECTIONS` the
  request is handed to the full stack, whose cap answers it 503 `busy`.

Throttling and the body cap do not apply to media (api/throttling.py leaves /media/ uncounted;
a GET's body is never read). Anything but a domain error (a database or store in trouble) is
also handed to the full stack before a byte is sent, so that its error handlers answer it, as
they answer every route (503 with Retry-After, never a 500).

Large files are streamed in chunks from a thread: uvicorn implements no `sendfile`
(`http.response.zerocopysend`), so no ASGI app under it can hand a file to the kernel. That is
the edge's job: nginx answers cached media with sendfile.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from glimpse.api.connections import Occupancy
from glimpse.api.errors import error_response
from glimpse.errors import DomainError
from glimpse.media.origin import answer_media, etag_matches, prepared_answer
from glimpse.ops.request_ids import REQUEST_ID, accepted_request_id, new_request_id
from glimpse.ops.request_log import REQUEST_ID_HEADER, record_request

PREFIX = "/media/"
# What the metrics and the access log name these requests, as FastAPI's route did.
ROUTE_TEMPLATE = "/media/{key:path}"
_NOSNIFF = b"x-content-type-options"


class MediaFastPath:
    def __init__(
        self, app: ASGIApp, *, trust_incoming: bool, log_requests: bool, occupancy: Occupancy
    ) -> None:
        self.app = app
        self.trust_incoming = trust_incoming
        self.log_requests = log_requests
        self.occupancy = occupancy

    @staticmethod
    def takes(scope: Scope) -> bool:
        """Whether a request is this path's to answer (or to hand on)."""
        return (
            scope["type"] == "http"
            and scope["path"].startswith(PREFIX)
            and scope["method"] in ("GET", "HEAD")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.takes(scope) or self.occupancy.full:
            await self.app(scope, receive, send)
            return
        container = getattr(scope["app"].state, "container", None)
        if container is None:  # (not started: the full stack says so)
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        if_none_match = range_header = if_range = given_id = None
        # The first of each, as Starlette's Headers.get reads them.
        for name, value in scope["headers"]:
            if name == b"if-none-match":
                if_none_match = if_none_match or value.decode("latin-1")
            elif name == b"range":
                range_header = range_header or value.decode("latin-1")
            elif name == b"if-range":
                if_range = if_range or value.decode("latin-1")
            elif name == REQUEST_ID_HEADER:
                given_id = given_id or value.decode("latin-1")
        query: dict[str, str] = {}
        if scope["query_string"]:
            # (As Starlette parses it for FastAPI's Query: the last of a repeated name wins.)
            query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        request_id = (
            accepted_request_id(given_id) if self.trust_incoming else None
        ) or new_request_id()
        # (Set before the answer is made: a line logged while making it carries the id.)
        token = REQUEST_ID.set(request_id)
        self.occupancy.active += 1
        key = scope["path"][len(PREFIX) :]
        body: bytes | memoryview | None = None  # the bytes in hand; None: `response` streams
        response: Response | None = None
        try:
            prepared = None
            if scope["method"] == "GET" and not query and range_header is None:
                prepared = prepared_answer(container, key)
            if prepared is not None:
                # A hot public file: the answers answer_media made for it last time.
                if etag_matches(if_none_match, prepared.etag):
                    status, headers, body = 304, [*prepared.not_modified_headers], b""
                else:
                    status, headers, body = 200, [*prepared.ok_headers], prepared.body
            else:
                response = await answer_media(
                    container,
                    key,
                    head=scope["method"] == "HEAD",
                    if_none_match=if_none_match,
                    range_header=range_header,
                    if_range=if_range,
                    exp=query.get("exp"),
                    sig=query.get("sig"),
                    v=query.get("v"),
                )
        except DomainError as exc:
            response = error_response(exc.status, exc.code, exc.message, headers=exc.headers)
        except Exception:
            # Server trouble: nothing is sent yet; the full stack answers it as it answers any
            # route's (with its own request id, count and line).
            self.occupancy.active -= 1
            REQUEST_ID.reset(token)
            await self.app(scope, receive, send)
            return
        if response is not None:
            status, headers = response.status_code, response.raw_headers
            if type(response) is Response or type(response) is JSONResponse:
                body = response.body
        headers.append((REQUEST_ID_HEADER, request_id.encode()))
        if not any(name == _NOSNIFF for name, _ in headers):
            headers.append((_NOSNIFF, b"nosniff"))
        bytes_out = 0
        try:
            if body is not None:
                # Bytes in hand (most answers: from memory, a 304, an error): the two messages
                # Response would send, without its layer of calls.
                bytes_out = len(body)
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            else:  # streamed from a file or the store
                assert response is not None

                async def counted_send(message: Message) -> None:
                    nonlocal bytes_out
                    if message["type"] == "http.response.body":
                        bytes_out += len(message.get("body", b""))
                    await send(message)

                await response(scope, receive, counted_send)
        finally:
            self.occupancy.active -= 1
            self._record(scope, status, time.perf_counter() - started, bytes_out)
            REQUEST_ID.reset(token)

    def _record(self, scope: Scope, status: int, elapsed: float, bytes_out: int) -> None:
        record_request(
            scope, ROUTE_TEMPLATE, status, elapsed, 0, bytes_out, log_requests=self.log_requests
        )
