"""The web app's session over HTTP: who is signed in, the page's CSRF token, and the cookies.

The cookie is HttpOnly (no script of a page, ours or injected, can read the token) and
SameSite=Lax (another site's forms and scripts do not carry it on a POST); Secure whenever the
page was served over HTTPS. Its value is an ordinary access token (accounts/sessions.py).
"""

from __future__ import annotations

from fastapi import Request, Response

from glimpse.accounts import service as accounts
from glimpse.accounts.service import Authenticated
from glimpse.accounts.sessions import (
    PRESESSION_COOKIE,
    SESSION_COOKIE,
    csrf_matches,
    csrf_token,
    new_presession,
)
from glimpse.api.deps import token_was_good
from glimpse.container import Container
from glimpse.errors import Unauthenticated

# A pre-session lives as long as a form may sit open in a tab.
_PRESESSION_SECONDS = 24 * 3600


async def signed_in(request: Request, container: Container) -> Authenticated | None:
    """The account whose session cookie came with the request, or None (no cookie, or one
    expired or revoked)."""
    token = request.cookies.get(SESSION_COOKIE, "").strip()
    if not token:
        return None
    try:
        caller = await accounts.authenticate(container.db, token)
    except Unauthenticated:
        return None
    # As a good bearer token does: the session earns a throttling budget of its own.
    token_was_good(request, token, caller.user.id)
    return caller


def session_token(request: Request) -> str:
    return request.cookies.get(SESSION_COOKIE, "").strip()


def page_csrf(request: Request, container: Container, signed_in: bool) -> tuple[str, str | None]:
    """The CSRF token a page's forms carry, and a new pre-session to set as a cookie when the
    visitor is signed out and has none yet (None otherwise). A session cookie whose token is no
    longer good (revoked, expired, a database restored) counts for nothing: the visitor is
    signed out, and their forms are bound to a pre-session like anyone's."""
    token = session_token(request)
    if signed_in and token:
        return csrf_token(container.secret_key, token), None
    presession = request.cookies.get(PRESESSION_COOKIE, "").strip()
    fresh = None
    if not presession:
        presession = fresh = new_presession()
    return csrf_token(container.secret_key, presession), fresh


def form_csrf_ok(request: Request, container: Container, claimed: str, *, signed_in: bool) -> bool:
    """Whether a form's CSRF token is the one bound to this browser's session (signed-in forms)
    or pre-session (sign-in and sign-up)."""
    bound = (
        session_token(request) if signed_in else request.cookies.get(PRESESSION_COOKIE, "").strip()
    )
    return csrf_matches(container.secret_key, bound, claimed)


def _secure(request: Request) -> bool:
    """Whether the browser reached us over HTTPS: directly, or through the trusted proxies
    (GLIMPSE_TRUSTED_PROXY_HOPS), each of which appends the scheme it was reached by to
    X-Forwarded-Proto; the outermost one's is what the browser used. (uvicorn itself trusts
    that header only from 127.0.0.1.)"""
    if request.url.scheme == "https":
        return True
    container: Container = request.app.state.container
    hops = container.settings.trusted_proxy_hops
    if hops <= 0:
        return False
    schemes = [
        scheme.strip().lower()
        for value in request.headers.getlist("x-forwarded-proto")
        for scheme in value.split(",")
        if scheme.strip()
    ]
    return len(schemes) >= hops and schemes[-hops] == "https"


def set_presession(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        PRESESSION_COOKIE,
        value,
        max_age=_PRESESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )


def start_session(request: Request, response: Response, token: str, ttl_seconds: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=ttl_seconds,
        path="/",
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )
    # Spent: the next signed-out visit gets a new one (a fixed pre-session would let whoever
    # saw it forge the sign-in form of a later visitor on a shared machine).
    response.delete_cookie(PRESESSION_COOKIE, path="/")


def end_session(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=_secure(request)
    )
