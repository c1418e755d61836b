"""uvicorn's HTTP protocol with the limits it lacks for the header phase.

uvicorn (with httptools) buffers request headers without a bound and waits for them without a
deadline: four connections streaming 200 MB header lines cost the API process 515 MB, and a
thousand connections trickling a header byte every few seconds held every connection slot, so
even /healthz got uvicorn's 503. Behind nginx or Caddy their own limits apply first; `glimpse
serve` on its own needs these:

- headers (request line included) of more than `max_header_bytes` get 431 and the connection
  closed, with no more than that and one read's worth buffered;
- headers not complete within `header_timeout_seconds` of a request's first byte (or of the
  connection's opening) close the connection;
- more than `max_connections_per_client` open connections from one address are closed as they
  open, so one client cannot take every connection the process allows.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from glimpse.config import Settings

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"x-content-type-options: nosniff\r\n"
    b"connection: close\r\n"
)
_TOO_LARGE_BODY = (
    b'{"error": {"code": "headers_too_large", "message": "The request headers are too large."}}'
)


# What uvicorn answers a request it cannot parse (two Content-Lengths, Transfer-Encoding beside
# Content-Length, a bad chunk, a NUL in a header) is plain text; API.md's clients get its shape.
_NOT_HTTP = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"content-type: application/json\r\n"
    b"x-content-type-options: nosniff\r\n"
    b"cache-control: no-store\r\n"
    b"connection: close\r\n"
)
_NOT_HTTP_BODY = b'{"error": {"code": "bad_request", "message": "The request is not valid HTTP."}}'


class GuardedHttpProtocol(HttpToolsProtocol):
    max_header_bytes: ClassVar[int] = 64 * 1024
    header_timeout_seconds: ClassVar[float] = 10.0
    max_connections_per_client: ClassVar[int] = 0
    # Open connections by client address, in this process (one event loop: no lock needed).
    open_by_client: ClassVar[Counter[str]] = Counter()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_headers = True
        self._header_bytes = 0
        self._header_deadline: asyncio.TimerHandle | None = None
        self._counted_as: str | None = None
        address = self.client[0] if self.client else ""
        cap = self.max_connections_per_client
        if cap and self.open_by_client[address] >= cap:
            transport.close()
            return
        self.open_by_client[address] += 1
        self._counted_as = address
        self._start_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_deadline()
        if self._counted_as is not None:
            self.open_by_client[self._counted_as] -= 1
            if self.open_by_client[self._counted_as] <= 0:
                del self.open_by_client[self._counted_as]
            self._counted_as = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        counting = self._in_headers
        if counting:
            self._header_bytes += len(data)
        super().data_received(data)
        # Judged after the parser has seen the bytes: a read that completes the headers (and
        # carries the start of a large body) is no reason to refuse.
        if counting and self._in_headers and self._header_bytes > self.max_header_bytes:
            self._refuse_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        if self._header_deadline is None:
            self._start_header_deadline()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self._stop_header_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What arrives next is the next request's headers (its deadline starts with its first
        # byte; the idle time before it is uvicorn's keep-alive timeout's).
        self._in_headers = True
        self._header_bytes = 0

    def _start_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(
            self.header_timeout_seconds, self._headers_too_slow
        )

    def _stop_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self._in_headers and not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        # (uvicorn's message names the parser's complaint: for the log, not for the client.)
        if self.transport.is_closing():
            return
        self.transport.write(
            _NOT_HTTP
            + b"content-length: "
            + str(len(_NOT_HTTP_BODY)).encode()
            + b"\r\n\r\n"
            + _NOT_HTTP_BODY
        )
        self.transport.close()

    def _refuse_headers(self) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(
            _TOO_LARGE
            + b"content-length: "
            + str(len(_TOO_LARGE_BODY)).encode()
            + b"\r\n\r\n"
            + _TOO_LARGE_BODY
        )
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedHttpProtocol]:
    """The protocol class for one server, with the settings' limits."""
    attributes: dict[str, Any] = {
        "max_header_bytes": settings.max_header_bytes,
        "header_timeout_seconds": settings.header_timeout_seconds,
        # Behind a trusted proxy every connection comes from the proxy's address.
        "max_connections_per_client": (
            0 if settings.trusted_proxy_hops else settings.max_connections_per_client
        ),
        "open_by_client": Counter(),
    }
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), attributes)
