"""API.md's error body for every failure: domain errors, validation, unknown routes, and the
unexpected (logged here, never shown to the client)."""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import Message

from glimpse.db.failures import disk_at_fault, file_unreadable, try_again_soon
from glimpse.errors import DomainError, StorageUnavailable
from glimpse.ids import NodeLeaseExpired
from glimpse.ops.request_log import route_template
from glimpse.web.paths import is_page

log = logging.getLogger("glimpse.api")


class Error(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: Error


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the errors a route may answer, all with API.md's error body."""
    return {
        status: {
            "model": ErrorBody,
            "description": _STATUS_CODES[status].replace("_", " "),
            "content": {"application/json": {"example": _EXAMPLES[status]}},
        }
        for status in statuses
    }


def _example(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# One answer of each status as the API gives it (API.md's error body), for /openapi.json.
_EXAMPLES = {
    400: _example("invalid_cursor", "The cursor is not one this server issued for this order."),
    401: _example("unauthenticated", "Sign in first: this needs a bearer token."),
    403: _example("forbidden", "Only the author may do this."),
    404: _example("not_found", "No such post."),
    405: _example("method_not_allowed", "Method Not Allowed"),
    406: _example("not_acceptable", "This route answers application/json only."),
    409: _example("username_taken", "That username is taken."),
    413: _example("too_large", "The body is larger than 65536 bytes."),
    415: _example("unsupported_media_type", "The file is not an image or video Glimpse takes."),
    416: _example("range_not_satisfiable", "The range starts past the end of the file."),
    422: {
        "error": {
            "code": "invalid",
            "message": "Some fields are missing or invalid.",
            "details": [{"loc": ["body", "username"], "msg": "Field required", "type": "missing"}],
        }
    },
    429: _example("throttled", "Too many requests; try again in 12 seconds."),
    503: _example("storage_unavailable", "The media store cannot take files now; try again soon."),
}


_STATUS_CODES = {
    400: "malformed_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid",
    429: "throttled",
    503: "unavailable",
}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: list[Any] | None = None,
    headers: Mapping[str, str] | None = None,
    body_unread: bool = False,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    # Also set by api/security_headers.py; here too for the 500, which Starlette answers
    # outside every middleware.
    headers = {**(headers or {}), "X-Content-Type-Options": "nosniff"}
    if body_unread:
        # Refused before the body was read (say, an upload over the size limit): the rest of it
        # is never read, so this connection cannot carry another request. uvicorn answers, then
        # closes it; it does not pass on what arrives after a complete answer.
        headers = {**headers, "Connection": "close"}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def early_error_messages(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
) -> list[Message]:
    """The ASGI messages of an error that a middleware answers before the app reads the body
    (so with `Connection: close`)."""
    response = error_response(status, code, message, headers=headers, body_unread=True)
    return [
        {"type": "http.response.start", "status": status, "headers": response.raw_headers},
        {"type": "http.response.body", "body": response.body},
    ]


def _plain_details(errors: Any) -> list[dict[str, Any]]:
    # Pydantic's raw errors may carry exceptions and bytes that JSON cannot hold.
    return [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": e.get("type"),
        }
        for e in errors
    ]


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return error_response(
        exc.status,
        exc.code,
        exc.message,
        details=exc.details,
        headers=exc.headers,
        body_unread=getattr(request.state, "body_unread", False),
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "malformed_json", "The request body is not valid JSON.")
    return error_response(
        422, "invalid", "Some fields are missing or invalid.", details=_plain_details(errors)
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = exc.headers
    if exc.status_code == 404:
        message = "Not found."
    elif exc.status_code == 405:
        # Starlette names only the first route that matched the path; each method of ours is
        # a route of its own, and Allow must list them all (RFC 9110, 15.5.6).
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return error_response(exc.status_code, code, message, headers=headers)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    # Asked of the routes as they match, rather than read off them: FastAPI nests included
    # routers, and only `matches` is the same on every kind of route.
    def takes(method: str) -> bool:
        scope = {**request.scope, "method": method}
        return any(route.matches(scope)[0] == Match.FULL for route in request.app.routes)

    get = takes("GET")  # and so HEAD too (api/head.py)
    return [m for m in _METHODS if (get if m in ("GET", "HEAD") else takes(m))]


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if try_again_soon(exc):
        # A busy database or a server that went away (db/failures.py): the transaction rolled
        # back, so the request may simply be sent again.
        return _try_again_soon(request, exc, retry_after=1)
    if disk_at_fault(exc) or file_unreadable(exc):
        # The server's trouble, which an operator fixes without a new release: 503 while it
        # lasts (a broken schema stays a 500). A disk failing reads is the second: SQLite gets
        # short pages and calls the file malformed (an attack got 500s there).
        what = "cannot be written" if disk_at_fault(exc) else "reads as damaged"
        log.error("the database %s (%s %s): %s", what, request.method, _route(request), exc.orig)
        return await _storage_unavailable(request)
    # A broken schema: no "try again" will help.
    return await _unexpected_error(request, exc)


# errno values that say the disk (or the process's share of descriptors) is at fault, not the
# request: full, over quota, read-only, refused to us, failing, out of files.
_DISK_ERRNOS = {
    errno.ENOSPC,
    errno.EACCES,
    errno.EDQUOT,
    errno.EROFS,
    errno.EIO,
    errno.EMFILE,
    errno.ENFILE,
}


async def _os_error(request: Request, exc: Exception) -> JSONResponse:
    # Backends raise StorageUnavailable for these; this catches whatever file access still
    # lets one through.
    assert isinstance(exc, OSError)
    if isinstance(exc, ConnectionError | TimeoutError):
        # A database server (asyncpg raises these unwrapped) or another backend that does not
        # answer: nothing was done, and the request may be sent again once it is back.
        return _try_again_soon(request, exc, retry_after=5)
    if exc.errno not in _DISK_ERRNOS:
        return await _unexpected_error(request, exc)
    log.error("storage failed on %s %s: %s", request.method, _route(request), exc)
    return await _storage_unavailable(request)


async def _storage_unavailable(request: Request) -> JSONResponse:
    # A full, read-only or failing disk (the store's or the database's) is answered like the
    # store's own StorageUnavailable, rather than "busy": an operator reading a client's report
    # then looks at the disk.
    return await _domain_error(
        request,
        StorageUnavailable("The server cannot store anything right now; please try again later."),
    )


def _route(request: Request) -> str:
    # Its template, never the path, as on the request's own log line (ops/request_log.py),
    # which the request id ties this line to: a path holds usernames and ids of people.
    return route_template(request.scope)


async def _node_lease_expired(request: Request, exc: Exception) -> JSONResponse:
    return _try_again_soon(request, exc, retry_after=5)


def _try_again_soon(request: Request, exc: Exception, retry_after: int) -> JSONResponse:
    log.warning("unavailable for %s %s: %s", request.method, _route(request), exc)
    return error_response(
        503,
        "unavailable",
        "The service is busy; please try again in a moment.",
        headers={"Retry-After": str(retry_after)},
        body_unread=getattr(request.state, "body_unread", False),
    )


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    # A phone that lost its signal mid-upload: routine, not a server error. Whatever had been
    # spooled is already removed; the answer reaches nobody but the metrics.
    log.info("client went away during %s %s", request.method, _route(request))
    return error_response(400, "client_disconnected", "The client closed the connection.")


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, _route(request), exc_info=exc)
    # The server closes the connection after this answer whatever state the request was in
    # (Starlette re-raises the error to it), so the answer says so: a client that reused the
    # connection would see its next request fail.
    return error_response(
        500, "internal_error", "Something went wrong on our side.", body_unread=True
    )


Handler = Callable[[Request, Exception], Awaitable[Response]]
# Set by the app factory: (settings, an error's JSON answer) -> the web app's page of it.
ERROR_PAGE = "error_page"


def as_page_where_browsed(request: Request, response: Response) -> Response:
    """The error as a page on the web app's paths (a browser navigated there), else as is."""
    app = request.scope.get("app")
    if app is None:  # (an ASGI part tested alone)
        return response
    render = getattr(app.state, ERROR_PAGE, None)
    container = getattr(app.state, "container", None)
    if render is None or container is None or not is_page(request.url.path):
        return response
    page: Response = render(container.settings, response)
    return page


def _for_pages_too(handler: Handler) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        return as_page_where_browsed(request, await handler(request, exc))

    return handle


def install_error_handlers(app: FastAPI) -> None:
    handlers: list[tuple[type[Exception], Handler]] = [
        (DomainError, _domain_error),
        (RequestValidationError, _validation_error),
        (StarletteHTTPException, _http_error),
        (DBAPIError, _database_unavailable),
        (NodeLeaseExpired, _node_lease_expired),
        (ClientDisconnect, _client_gone),
        (OSError, _os_error),
        (Exception, _unexpected_error),
    ]
    for kind, handler in handlers:
        app.add_exception_handler(kind, _for_pages_too(handler))


def links(status: int, **targets: tuple[str, str, dict[str, str]]) -> dict[int | str, Any]:
    """An OpenAPI `links` entry for a route's success response: where what it made can be read
    next, e.g. `links(202, GetPost=("get", "/api/v1/posts/{post_id}", {"post_id":
    "$response.body#/id"}))`. Clients and stateful fuzzers (schemathesis) follow them."""
    made = {}
    for name, (method, path, parameters) in targets.items():
        pointer = path.replace("~", "~0").replace("/", "~1")
        made[name] = {"operationRef": f"#/paths/{pointer}/{method}", "parameters": parameters}
    return {status: {"links": made}}
