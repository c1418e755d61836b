"""The web app's session: a cookie that holds a bearer token, and the CSRF token bound to it.

A session is an ordinary access token (tokens.py), issued by the same sign-in, revoked the same
way; only where the client keeps it differs. Because a browser sends a cookie on requests other
sites cause, a state-changing request that authenticates by cookie must also prove it came from
one of our pages: the page carries a CSRF token, an HMAC of the session's token under the
server's secret, which another site can neither read nor compute. Before sign-in the forms are
bound the same way to a random pre-session cookie, so that another site cannot sign a browser
in to an account of its choosing (login CSRF).
"""

from __future__ import annotations

import secrets

from glimpse.signing import signature, signature_matches

SESSION_COOKIE = "glimpse_session"
PRESESSION_COOKIE = "glimpse_presession"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"

# Methods that change nothing, and so need no CSRF token (RFC 9110's safe methods).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_SIZE = 24  # bytes of HMAC kept: 192 bits


def new_presession() -> str:
    return secrets.token_urlsafe(24)


def csrf_token(secret: bytes, bound_to: str) -> str:
    """The CSRF token of the session (or pre-session) whose cookie value is `bound_to`."""
    return signature(secret, b"csrf:" + bound_to.encode(), _SIZE)


def csrf_matches(secret: bytes, bound_to: str, claimed: str) -> bool:
    if not bound_to or not claimed:
        return False
    return signature_matches(secret, b"csrf:" + bound_to.encode(), claimed, _SIZE)
