"""Domain errors. Services raise these; api/errors.py maps them to API.md's error body."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details
        self.headers = headers


class Malformed(DomainError):
    status, code = 400, "malformed_request"


class Unauthenticated(DomainError):
    status, code = 401, "unauthenticated"

    def __init__(self, message: str, *, code: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, code=code, **kwargs)
        # A 401 names the scheme to use (RFC 9110, 11.6.1); RFC 6750 adds why a token failed.
        challenge = "Bearer"
        if self.code == "invalid_token":
            challenge += ' error="invalid_token"'
        self.headers = {"WWW-Authenticate": challenge, **(self.headers or {})}


class Forbidden(DomainError):
    status, code = 403, "forbidden"


class NotFound(DomainError):
    status, code = 404, "not_found"


class Conflict(DomainError):
    status, code = 409, "conflict"


class TooLarge(DomainError):
    status, code = 413, "too_large"


class Stalled(Malformed):
    """The request body stopped arriving. (HTTP has 408 for this, but API.md's contract lists
    the statuses clients must handle, and a request that never finishes is a malformed one.)"""

    code = "upload_stalled"


class UnsupportedMediaType(DomainError):
    status, code = 415, "unsupported_media_type"


class RangeNotSatisfiable(DomainError):
    status, code = 416, "range_not_satisfiable"


class Invalid(DomainError):
    status, code = 422, "invalid"


class Throttled(DomainError):
    status, code = 429, "throttled"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None):
        super().__init__(message, code=code, headers={"Retry-After": str(max(1, retry_after))})


class Unavailable(DomainError):
    """The server's trouble, not the client's: try again after `retry_after` seconds."""

    status, code = 503, "unavailable"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None):
        super().__init__(message, code=code, headers={"Retry-After": str(max(1, retry_after))})


class StorageUnavailable(Unavailable):
    """The store cannot take a write now (full, read-only, failing disk, timeouts)."""

    code = "storage_unavailable"
    # A disk is freed or remounted by an operator: minutes, not a moment.
    RETRY_AFTER_SECONDS = 30

    def __init__(
        self, message: str, *, retry_after: int = RETRY_AFTER_SECONDS, code: str | None = None
    ):
        super().__init__(message, retry_after=retry_after, code=code)
