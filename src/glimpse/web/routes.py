"""The web app's pages: server-rendered from the same services and the same JSON values as the
public API (no other way in), so that every page shows its content without JavaScript. What
changes state in place (likes, comments, follows, uploads, stories) is done by static/app.js
through /api/v1 with the session cookie and the page's CSRF token; only signing in, up and out,
saving the profile, asking for a data export and deleting the account are plain forms, posted
here.

Every page is throttled like the API (api/throttling.py counts these paths), answers a domain
error with an HTML page of the same status, and is sent with a Content-Security-Policy that
lets it run only our own scripts and styles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from starlette.datastructures import FormData

from glimpse.accounts import service as accounts
from glimpse.accounts.schemas import AccountCreate, ProfileUpdate, TokenRequest
from glimpse.accounts.service import Authenticated
from glimpse.accounts.sessions import CSRF_FIELD
from glimpse.api.throttling import client_address, count_against
from glimpse.container import Container
from glimpse.engagement import service as engagement
from glimpse.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    Throttled,
    Unauthenticated,
    Unavailable,
)
from glimpse.feed.routes import feed_page_data
from glimpse.graph import service as graph
from glimpse.pagination import encode_cursor, encode_keyset
from glimpse.posts import service as posts
from glimpse.posts.views import PostRow, post_view_data
from glimpse.privacy import erasure, export
from glimpse.privacy.schemas import ExportOut
from glimpse.stories import service as stories
from glimpse.stories.routes import tray_data
from glimpse.stories.views import highlight_views
from glimpse.throttling import EXPORTS, SIGNUP
from glimpse.web import sessions
from glimpse.web.rendering import render, static_file

log = logging.getLogger("glimpse.web")

FEED_PAGE_SIZE = 20  # the issue's: twenty posts a page
GRID_PAGE_SIZE = 18  # six rows of three; the rest as one scrolls
REQUESTS_PAGE_SIZE = 20

RouteHandler = Callable[[Request], Coroutine[Any, Any, Response]]


class _PageRoute(APIRoute):
    """A page's route: a domain error (an unknown user, a throttled request, a database that
    is not ready) is answered as a page of the same status and headers, not as JSON."""

    def get_route_handler(self) -> RouteHandler:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except DomainError as error:
                return await _error_page(request, error)

        return page_handler


router = APIRouter(include_in_schema=False, route_class=_PageRoute)


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def _page(
    request: Request,
    template: str,
    viewer: Authenticated | None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    session_checked: bool = True,
    **context: Any,
) -> HTMLResponse:
    """The page, with its CSRF token; `session_checked` says whether `viewer` is what the
    session cookie was found to be (else nothing is concluded about the cookie)."""
    container = _container(request)
    # (A session not checked is taken as it is: its page binds to it, and no pre-session is set.)
    csrf, fresh_presession = sessions.page_csrf(
        request, container, viewer is not None or not session_checked
    )
    response = render(
        container.settings,
        template,
        status=status,
        headers=headers,
        viewer=viewer.user if viewer else None,
        csrf_token=csrf,
        **context,
    )
    if fresh_presession is not None:
        sessions.set_presession(request, response, fresh_presession)
    if session_checked and viewer is None and sessions.session_token(request):
        sessions.end_session(request, response)  # a dead cookie: gone, lest it be sent forever
    return response


async def _error_page(request: Request, error: DomainError) -> Response:
    # The database may be what failed (503): then the session is not looked up, and its cookie
    # is left alone (a busy moment must not sign anyone out).
    available = error.status != 503
    viewer = await sessions.signed_in(request, _container(request)) if available else None
    return await _page(
        request,
        "error.html",
        viewer,
        status=error.status,
        headers=error.headers,
        session_checked=available,
        message=error.message,
    )


def _to_sign_in() -> RedirectResponse:
    return RedirectResponse("/signin", status_code=303)


async def _form(request: Request) -> FormData:
    # A form of a few short fields: no file, no more fields than the largest form here has.
    return await request.form(max_files=0, max_fields=8)


def _field(form: FormData, name: str, limit: int) -> str:
    value = form.get(name)
    return value[: limit + 1] if isinstance(value, str) else ""


def _check_csrf(request: Request, container: Container, form: FormData, *, signed_in: bool) -> None:
    """A form posted here must carry the token of this browser's session (or pre-session)."""
    if not sessions.form_csrf_ok(
        request, container, _field(form, CSRF_FIELD, 64), signed_in=signed_in
    ):
        raise _form_expired()


async def _signed_in_form(request: Request) -> tuple[Container, Authenticated, FormData] | None:
    """A form a signed-in browser posted, its CSRF token checked (403 when it is not the
    session's); None when nobody is signed in, whom the caller sends to sign in."""
    container = _container(request)
    viewer = await sessions.signed_in(request, container)
    if viewer is None:
        return None
    form = await _form(request)
    _check_csrf(request, container, form, signed_in=True)
    return container, viewer, form


def _form_expired() -> Forbidden:
    return Forbidden(
        "This form has expired (or was sent from another site). Please try again.",
        code="csrf_failed",
    )


# Sign-up, sign-in, sign-out.


@router.get("/")
async def home(request: Request, order: str = "ranked") -> Response:
    container = _container(request)
    viewer = await sessions.signed_in(request, container)
    if viewer is None:
        return await _page(request, "welcome.html", None)
    chosen: Literal["ranked", "latest"] = "latest" if order == "latest" else "ranked"
    page = await feed_page_data(container, viewer.user.id, FEED_PAGE_SIZE, None, chosen)
    tray = await tray_data(container, viewer.user.id)
    async with container.db.read() as session:
        own = await stories.user_stories(
            session, viewer.user.username, viewer.user.id, container.now()
        )
    return await _page(
        request,
        "home.html",
        viewer,
        posts=page["items"],
        next_cursor=page["next_cursor"],
        order=chosen,
        tray=tray,
        has_own_story=any(story.status == "ready" for story in own),
    )


async def _signed_out_form(request: Request, template: str) -> Response:
    """The sign-up or sign-in form; someone signed in already goes home."""
    if await sessions.signed_in(request, _container(request)) is not None:
        return RedirectResponse("/", status_code=303)
    return await _page(request, template, None)


@router.get("/signup")
async def sign_up_page(request: Request) -> Response:
    return await _signed_out_form(request, "signup.html")


@router.post("/signup")
async def sign_up(request: Request) -> Response:
    container = _container(request)
    form = await _form(request)
    username = _field(form, "username", 64)
    _check_csrf(request, container, form, signed_in=False)
    try:
        body = AccountCreate.model_validate(
            {"username": username, "password": _field(form, "password", 300)}
        )
    except ValidationError:
        return await _page(
            request,
            "signup.html",
            None,
            status=422,
            username=username,
            message=(
                "Choose a username of 1 to 30 lowercase letters, digits, '_' or '.', "
                "and a password of 8 to 256 characters."
            ),
        )
    await count_against(
        request,
        container.throttle,
        SIGNUP,
        "address",
        client_address(request.scope, container.settings.trusted_proxy_hops),
        message="Too many new accounts from this address; please try again later.",
    )
    try:
        user = await accounts.sign_up(
            container, username=body.username, password=body.password, display_name=None
        )
    except Conflict as taken:
        return await _page(
            request, "signup.html", None, status=409, username=username, message=taken.message
        )
    ttl = container.settings.token_ttl_seconds
    async with container.db.write() as session:
        token = accounts.issue_token(session, container.ids, user, ttl)
    response = RedirectResponse("/", status_code=303)
    sessions.start_session(request, response, token, ttl)
    return response


@router.get("/signin")
async def sign_in_page(request: Request) -> Response:
    return await _signed_out_form(request, "signin.html")


@router.post("/signin")
async def sign_in(request: Request) -> Response:
    """The API's sign-in (accounts.sign_in): throttled per address and account, and as slow
    for an unknown username as for a wrong password."""
    container = _container(request)
    form = await _form(request)
    username = _field(form, "username", 64)
    _check_csrf(request, container, form, signed_in=False)
    try:
        body = TokenRequest.model_validate(
            {"username": username, "password": _field(form, "password", 256)}
        )
        issued = await accounts.sign_in(
            container,
            body.username,
            body.password,
            client_address(request.scope, container.settings.trusted_proxy_hops),
        )
    except (ValidationError, Unauthenticated):
        return await _page(
            request,
            "signin.html",
            None,
            status=401,
            username=username,
            message="Wrong username or password.",
        )
    except Throttled as throttled:
        return await _page(
            request,
            "signin.html",
            None,
            status=429,
            headers=throttled.headers,
            username=username,
            message=throttled.message,
        )
    response = RedirectResponse("/", status_code=303)
    sessions.start_session(request, response, issued.token, issued.expires_in)
    return response


@router.post("/signout")
async def sign_out(request: Request) -> Response:
    container = _container(request)
    form = await _form(request)
    _check_csrf(request, container, form, signed_in=True)
    viewer = await sessions.signed_in(request, container)
    if viewer is not None:
        try:
            async with container.db.write() as session:
                await accounts.revoke_token(session, viewer.token_id)
        except (OperationalError, OSError, Unavailable) as error:
            # The browser is signed out all the same (on a shared computer that is what
            # matters); the token itself lives on until it expires.
            log.warning("could not revoke a session's token on sign-out: %s", error)
    response = RedirectResponse("/", status_code=303)
    sessions.end_session(request, response)
    return response


# Signed-in pages.


@router.get("/new")
async def new_post_page(request: Request) -> Response:
    viewer = await sessions.signed_in(request, _container(request))
    if viewer is None:
        return _to_sign_in()
    return await _page(request, "new.html", viewer)


@router.get("/requests")
async def follow_requests_page(request: Request) -> Response:
    container = _container(request)
    viewer = await sessions.signed_in(request, container)
    if viewer is None:
        return _to_sign_in()
    async with container.db.read() as session:
        users, next_key = await graph.list_follow_requests(
            session, viewer.user.id, None, REQUESTS_PAGE_SIZE
        )
    return await _page(
        request,
        "requests.html",
        viewer,
        requesters=users,
        # The API's own cursor: the page scrolls on through GET /api/v1/me/follow-requests.
        next_cursor=encode_keyset(container.secret_key, "follow_requests", next_key)
        if next_key is not None
        else None,
    )


@router.get("/settings/profile")
async def edit_profile_page(request: Request) -> Response:
    viewer = await sessions.signed_in(request, _container(request))
    if viewer is None:
        return _to_sign_in()
    return await _page(request, "edit_profile.html", viewer, user=viewer.user)


@router.post("/settings/profile")
async def edit_profile(request: Request) -> Response:
    """The API's PATCH /api/v1/me, as a form."""
    posted = await _signed_in_form(request)
    if posted is None:
        return _to_sign_in()
    container, viewer, form = posted
    try:
        changes = ProfileUpdate.model_validate(
            {
                "display_name": _field(form, "display_name", 64),
                "bio": _field(form, "bio", 500).replace("\r\n", "\n"),
                "is_private": form.get("is_private") == "on",
            }
        )
    except ValidationError:
        return await _page(
            request,
            "edit_profile.html",
            viewer,
            status=422,
            user=viewer.user,
            message=(
                "A display name is one line of at most 64 characters; a bio at most 500 characters."
            ),
        )
    async with container.db.write() as session:
        await graph.change_profile(
            session, container.ids, container.settings, viewer.user.id, changes
        )
    return RedirectResponse(f"/{viewer.user.username}", status_code=303)


@router.get("/settings/account")
async def account_page(request: Request) -> Response:
    """The latest data export (to download, or being made) and the account's deletion."""
    viewer = await sessions.signed_in(request, _container(request))
    if viewer is None:
        return _to_sign_in()
    return await _account_page(request, viewer)


async def _account_page(
    request: Request,
    viewer: Authenticated,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    container = _container(request)
    try:
        latest = await export.show_latest_export(container, viewer.user.id)
    except NotFound:
        shown = None
    else:
        shown = ExportOut.of(latest).model_dump(mode="json")
    return await _page(
        request,
        "account.html",
        viewer,
        status=status,
        headers=headers,
        export=shown,
        hold_days=container.settings.erased_username_hold_days,
        **context,
    )


@router.post("/settings/export")
async def start_export(request: Request) -> Response:
    """The API's POST /api/v1/me/export, as a form: the same budget, one export at a time."""
    posted = await _signed_in_form(request)
    if posted is None:
        return _to_sign_in()
    container, viewer, _ = posted
    await count_against(
        request,
        container.throttle,
        EXPORTS,
        "account",
        str(viewer.user.id),
        message="Too many exports; please try again later.",
    )
    await export.start_export(container, viewer.user.id)
    return RedirectResponse("/settings/account", status_code=303)


@router.post("/settings/delete")
async def delete_account(request: Request) -> Response:
    """The API's DELETE /api/v1/me, as a form: confirmed with the password, which is checked
    (and throttled) as a sign-in's; the browser is signed out with the account."""
    posted = await _signed_in_form(request)
    if posted is None:
        return _to_sign_in()
    container, viewer, form = posted
    address = client_address(request.scope, container.settings.trusted_proxy_hops)
    try:
        await erasure.erase_with_password(
            container, viewer.user, _field(form, "password", 256), address
        )
    except Unauthenticated:
        return await _account_page(request, viewer, status=401, message="Wrong password.")
    except Throttled as throttled:
        return await _account_page(
            request, viewer, status=429, headers=throttled.headers, message=throttled.message
        )
    # Its session token is revoked already: the page, shown to nobody, ends the cookie too.
    return await _page(request, "account_deleted.html", None)


@router.get("/p/{post_id}")
async def post_page(request: Request, post_id: str) -> Response:
    """One post with its first comments, as GET /api/v1/posts/{id} and its comments show it."""
    container = _container(request)
    viewer = await sessions.signed_in(request, container)
    if viewer is None:
        return _to_sign_in()
    # Any text is a path here: what is no id is a post that does not exist (a page, not JSON).
    if not post_id.isascii() or not post_id.isdigit() or int(post_id) >= 2**63:
        raise NotFound("No such post.", code="post_not_found")
    me = viewer.user.id
    async with container.db.read() as session:
        post = await posts.get_visible_post(session, int(post_id), me)
        comments, more = await engagement.list_comments(session, post.id, me, None, 50)
    [view] = await post_view_data(
        container.db, [PostRow.of(post)], me, container.media_urls, container.post_summaries
    )
    return await _page(
        request,
        "post.html",
        viewer,
        post=view,
        comments=[c.model_dump(mode="json") for c in comments],
        # The API's own cursor, for the page's "More comments" (static/app.js).
        comments_cursor=encode_cursor(
            container.secret_key, "comments", {"after": more, "post": post.id}
        )
        if more is not None
        else None,
    )


@router.get("/static/{name}")
async def static(name: str) -> Response:
    return static_file(name)


# Last: any other single path segment is a profile.
@router.get("/{username}")
async def profile(request: Request, username: str) -> Response:
    container = _container(request)
    viewer = await sessions.signed_in(request, container)
    if viewer is None:
        # A path that is no account is a 404 to anyone (sign-up tells whether a name is taken
        # all the same); an account's page asks a visitor to sign in first.
        async with container.db.read() as session:
            if await accounts.find_user(session, username) is None:
                raise NotFound("No such page.", code="not_found")
        return _to_sign_in()
    me = viewer.user.id
    async with container.db.read() as session:
        user, relation = await graph.visible_user(session, username, me)
        try:
            found, more = await posts.list_profile_posts(
                session, username, me, None, GRID_PAGE_SIZE
            )
            highlights = await highlight_views(
                session,
                container,
                await stories.user_highlights(session, username, me),
                me,
            )
            private = False
        except Forbidden:  # a private account the viewer does not follow
            found, more, highlights, private = [], False, [], True
    grid = await post_view_data(
        container.db,
        [PostRow.of(p) for p in found],
        me,
        container.media_urls,
        container.post_summaries,
    )
    return await _page(
        request,
        "profile.html",
        viewer,
        user=user,
        follow_status=graph.follow_status(me, user.id, relation),
        grid=grid,
        # The API's own cursor: the grid scrolls on through GET /api/v1/users/{username}/posts.
        next_cursor=encode_keyset(container.secret_key, "user_posts", found[-1].id, username)
        if more
        else None,
        private=private,
        highlights=[h.model_dump(mode="json") for h in highlights],
    )
