"""Headers every response gets, whatever route answered it.

- `X-Content-Type-Options: nosniff` everywhere: a browser must never guess that a JSON error or
  an uploaded file is HTML or script.
- `Cache-Control: no-store` on the API's JSON answers: those to an authenticated request hold
  one user's data and signed media URLs, and the token route's holds a token (RFC 6749, 5.1);
  no shared cache (nor the browser's disk) should keep any of them. A route that chose its own
  Cache-Control keeps it.
- No `Server` header: it names the software and its version to anyone probing for a known bug.
  (uvicorn's own is turned off where serve configures it; this removes one an app would set.)
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = scope["path"].startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                if (
                    private
                    and headers.get("content-type", "").startswith("application/json")
                    and "cache-control" not in headers
                ):
                    headers["Cache-Control"] = "no-store"
                if "server" in headers:
                    del headers["server"]
            await send(message)

        await self.app(scope, receive, send_with_headers)
