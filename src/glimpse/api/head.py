"""HEAD for every route that answers GET.

RFC 9110 (9.3.2) makes HEAD a GET without the body, and load balancers probe /healthz with it;
FastAPI routes answer only the methods they name. So a HEAD runs as a GET, whose headers
(Content-Length included) go out as they are and whose body does not.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_without_body)
