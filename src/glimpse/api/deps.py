"""Request-scoped dependencies: the container, and the caller behind a bearer token (or the web
app's session cookie, which holds one)."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, Path, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from glimpse.accounts import service as accounts
from glimpse.accounts.service import Authenticated
from glimpse.accounts.sessions import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE, csrf_matches
from glimpse.container import Container
from glimpse.db.replicas import act_as
from glimpse.errors import Forbidden, Unauthenticated


async def get_container(request: Request) -> Container:
    # async on purpose: FastAPI runs a plain `def` dependency in a thread, a hop per request.
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


# Declared for the OpenAPI page (its "Authorize" button); we read the header ourselves so that a
# missing token gets API.md's 401 body rather than FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="A token from POST /api/v1/auth/token")


# Set in the request's scope state once its token was found good, to that token's budget key:
# only a token a route verified earns a throttling budget of its own (api/throttling.py), and
# only when it is the very token the budget was keyed by (a request may carry a bearer token
# and a cookie, or two cookies of the same name).
TOKEN_AUTHENTICATED = "token_authenticated"


def token_budget_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _caller_token(
    request: Request, container: Container, credentials: HTTPAuthorizationCredentials | None
) -> str:
    """The token the request authenticates with: its bearer token, or else its session cookie,
    which for a state-changing method must come with the page's CSRF token (API.md)."""
    token = credentials.credentials.strip() if credentials else ""
    if token:
        return token
    token = request.cookies.get(SESSION_COOKIE, "").strip()
    if not token:
        raise Unauthenticated("A bearer token is required.", code="unauthenticated")
    if request.method not in SAFE_METHODS and not csrf_matches(
        container.secret_key, token, request.headers.get(CSRF_HEADER, "")
    ):
        raise Forbidden(
            "A request signed in by the session cookie needs the page's X-CSRF-Token.",
            code="csrf_failed",
        )
    return token


# ... and to the account's id, for the request's log line (ops/request_log.py).
CALLER_ID = "caller_id"


def token_was_good(request: Request, token: str, user_id: int) -> None:
    state = request.scope.setdefault("state", {})
    state[TOKEN_AUTHENTICATED] = token_budget_key(token)
    state[CALLER_ID] = user_id
    act_as(user_id)  # its reads after its own writes see them (db/replicas.py)


async def get_caller(
    request: Request,
    container: ContainerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Authenticated:
    token = _caller_token(request, container, credentials)
    caller = await accounts.authenticate(container.db, token)
    token_was_good(request, token, caller.user.id)
    return caller


async def get_caller_id(
    request: Request, container: Container, version: tuple[int, int] | None = None
) -> int:
    """The id of the caller `get_caller` would find, refused alike, for a route handler that
    authenticates without FastAPI's dependency solving and needs no more (feed/routes.py).
    `version`: the database's version the handler read first (accounts.authenticate_id)."""
    token = _caller_token(request, container, await _bearer(request))
    user_id = await accounts.authenticate_id(container.db, token, container.token_memo, version)
    token_was_good(request, token, user_id)
    return user_id


Caller = Annotated[Authenticated, Depends(get_caller)]

# Every id in a path: a 64-bit integer (ids.py), so anything else is refused before a query.
EntityId = Annotated[int, Path(ge=0, le=2**63 - 1)]

# A page size: checked by pagination.check_limit, so that 0 or 101 get API.md's 422
# `invalid_limit` rather than a generic validation error. (Not a number at all is `invalid`.)
PageLimit = Annotated[int | None, Query(description="items per page: 1 to 100 (default 20)")]
