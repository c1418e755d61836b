"""Throttling over HTTP: who the client is, the `api` budget on every /api/ request, and the
RateLimit-* headers (glimpse/throttling.py holds the budgets themselves).

The `api` budget is counted before the request reaches its route (so before any body is read
and before the token is looked up): per bearer token when the request carries one this process
has seen accepted, else per client address. (Keyed by any token at all, a client could send each
request with a new made-up one and never run out, while filling memory with their counts; so a
token's requests count against the address until one of them was answered other than 401.)
Routes count their own budgets (`upload`, `signup`) with
`count_against`; every response then reports the budget closest to running out among those it
counted against.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from glimpse.accounts.sessions import SESSION_COOKIE
from glimpse.api.deps import TOKEN_AUTHENTICATED, ContainerDep, token_budget_key
from glimpse.api.errors import as_page_where_browsed, error_response
from glimpse.throttling import Throttle, Verdict, request_budget, throttled

_VERDICT = "rate_limit"  # where a request's verdict is kept in its scope's state


def client_address(scope: Scope, trusted_proxy_hops: int) -> str:
    """The address budgets are kept for: the socket's peer, or, behind `trusted_proxy_hops`
    proxies that each append to X-Forwarded-For, the address the outermost one saw (the
    N-th from the right; anything left of it the client could have written). IPv6 clients
    are taken by their /64, which is what one subscriber gets."""
    peer = scope.get("client")
    address = str(peer[0]) if peer else "unknown"
    if trusted_proxy_hops > 0:
        forwarded = [
            hop.strip()
            for value in Headers(scope=scope).getlist("x-forwarded-for")
            for hop in value.split(",")
        ]
        forwarded = [hop for hop in forwarded if hop]
        if len(forwarded) >= trusted_proxy_hops:
            address = forwarded[-trusted_proxy_hops]
    return _budget_address(address)


def _budget_address(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:100]  # not an address (a proxy's own notation): kept as a name
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _caller_token(scope: Scope) -> str:
    """The bearer token, or else the session cookie's (api/deps.py reads them in that order)."""
    headers = Headers(scope=scope)
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return _session_cookie(headers.get("cookie", ""))


def _session_cookie(header: str) -> str:
    # Parsed as Starlette parses it for the route (the last of two same-named cookies wins), so
    # that the budget is keyed by the token the route will check.
    return cookie_parser(header).get(SESSION_COOKIE, "").strip()


def record_verdict(state: dict[str, Any], verdict: Verdict | None) -> None:
    """Keep, for the RateLimit-* headers, whichever budget is closest to running out."""
    if verdict is None:
        return
    kept: Verdict | None = state.get(_VERDICT)
    if kept is None or verdict.remaining <= kept.remaining:
        state[_VERDICT] = verdict


async def count_against(
    request: Request, throttle: Throttle, budget: str, *key: str, message: str
) -> None:
    """Count this request against `budget` for `key`; raise Throttled (429) when it is spent."""
    verdict = await throttle.hit(budget, *key)
    record_verdict(request.scope.setdefault("state", {}), verdict)
    if verdict is not None and not verdict.allowed:
        raise throttled(verdict, message)


async def get_client_address(request: Request, container: ContainerDep) -> str:
    return client_address(request.scope, container.settings.trusted_proxy_hops)


ClientAddress = Annotated[str, Depends(get_client_address)]


# What no budget counts: the media origin (its cache answers most of it, and the page that
# links it was counted), the web app's and the docs' static files, and the probes operators'
# monitors send.
_UNCOUNTED_PREFIXES = ("/media/", "/static/", "/docs/static/")
_UNCOUNTED = frozenset({"/healthz", "/readyz", "/metrics"})


def counted(path: str) -> bool:
    """Whether a request to this path counts against a budget: the API's and the web app's
    pages and forms do (a page costs the same reads as the API route it shows)."""
    return path not in _UNCOUNTED and not path.startswith(_UNCOUNTED_PREFIXES)


class ThrottleMiddleware:
    """Counts every /api/ request and web page against the `api` budget (or `reads`/`writes`) and adds the
    RateLimit-* headers to whatever answers it. With throttling `off` it only passes through."""

    def __init__(self, app: ASGIApp, known_tokens: int = 100_000) -> None:
        self.app = app
        # Hashes of tokens answered other than 401 lately, the most recent `known_tokens`.
        self._known_tokens: OrderedDict[str, None] = OrderedDict()
        self._known_capacity = known_tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not counted(scope["path"]):
            await self.app(scope, receive, send)
            return
        container = scope["app"].state.container
        throttle: Throttle = container.throttle
        if not throttle.enabled:
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        budget = request_budget(throttle.budgets, scope["method"])
        token = _caller_token(scope)
        token_hash = token_budget_key(token) if token else ""
        if budget is not None:
            if token_hash in self._known_tokens:
                key = ("token", token_hash)
            else:
                key = ("address", client_address(scope, container.settings.trusted_proxy_hops))
            verdict = await throttle.hit(budget, *key)
            record_verdict(state, verdict)
            if verdict is not None and not verdict.allowed:
                error = throttled(verdict, "Too many requests; please slow down.")
                response = error_response(
                    error.status, error.code, error.message, headers=error.headers, body_unread=True
                )
                await as_page_where_browsed(Request(scope), response)(scope, receive, send)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Only a token a route found good: a made-up one sent to a route that reads
                # no token (say, sign-up) must not earn a budget of its own.
                if token_hash and state.get(TOKEN_AUTHENTICATED) == token_hash:
                    self._remember_token(token_hash)
                kept: Verdict | None = state.get(_VERDICT)
                headers = MutableHeaders(scope=message)
                # A 429 of a route's own budget already names that budget.
                if kept is not None and "ratelimit-limit" not in headers:
                    for name, value in kept.headers().items():
                        headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _remember_token(self, token_hash: str) -> None:
        self._known_tokens[token_hash] = None
        self._known_tokens.move_to_end(token_hash)
        if len(self._known_tokens) > self._known_capacity:
            self._known_tokens.popitem(last=False)
