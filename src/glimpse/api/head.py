"""HEAD for every route that answers GET.

RFC 9110 (9.3.2) makes HEAD a GET without the body, and load balancers probe /healthz with it;
FastAPI routes answer only the methods they name. So a HEAD that no route takes as such runs as
a GET, whose headers (Content-Length included) go out as they are and whose body does not.
Routes that answer HEAD themselves (the media origin, which then reads no file) keep it.
"""

from __future__ import annotations

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What routing writes into the scope; the metrics, outside, label requests by the route.
_ROUTING_KEYS = ("route", "endpoint", "path_params")


class HeadAsGet:
    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or self._takes_head(scope):
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive, send_without_body)
        finally:
            scope.update({key: as_get[key] for key in _ROUTING_KEYS if key in as_get})

    def _takes_head(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] == Match.FULL for route in self.router.routes)
