"""The authorisation matrix (issue 20): every route of the app's route table against every way a
caller can stand to a private account (tests/api/authorisation_world.py), one world built once
for the module.

For each route x relation it checks:
- the status the relation must get (the table below, one row per route);
- a refusal that could tell whether something exists (401, 404, and the CSRF 403) is the very
  answer the same caller gets for a target that does not exist: same status, headers and
  body, byte for byte apart from the request id;
- no answer to a caller who may not see the account's content carries any of it: its captions,
  comments, highlight title, or the store key of any of its media (photo, video, poster, story).

A route the table does not name fails the first test: a new route needs its row.
tests/api/test_visibility_matrix.py holds the public-versus-private rule per read route; this
module holds who may call each route at all, and the media origin's side of it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.routing import Route

from glimpse.app import create_app
from glimpse.config import Settings
from tests.api.authorisation_world import (
    BYSTANDER,
    CAPTION,
    COMMENT,
    FAN_COMMENT,
    HIGHLIGHT,
    PASSWORD,
    RELATIONS,
    SEES,
    VIDEO_CAPTION,
    World,
    build_world,
)
from tests.clips import Clip
from tests.conftest import jpeg_bytes

pytestmark = pytest.mark.asyncio(loop_scope="module")

# A valid id that names nothing, and a username nobody has.
MISSING_ID = str(2**62 + 7)
MISSING_USER = "m_nobody"

_COLUMNS = " ".join(f"{r[:8]:>8}" for r in RELATIONS)


def row(statuses: str) -> dict[str, int]:
    """One row of the table: a status per relation, in RELATIONS' order."""
    values = [int(s) for s in statuses.split()]
    return dict(zip(RELATIONS, values, strict=True))


@dataclass(frozen=True)
class Case:
    """A route and what each relation gets from it."""

    expect: dict[str, int]
    # The placeholders of the path that name a target, each filled from World.targets (or the
    # usernames), and swapped for one that does not exist for the comparison.
    targets: tuple[str, ...] = ()
    json: Callable[[World, str, str], Any] | None = None
    form: Callable[[World, str], dict[str, str]] | None = None
    files: bool = False
    query: Callable[[World], str] | None = None
    # What a relation that succeeds acts on instead of the shared target (a delete would
    # otherwise remove what the rest of the matrix looks at): a fresh one of the same kind.
    fresh: str | None = None
    # The route may change a relation (follow, block, accept...): put them back afterwards.
    regraph: bool = False
    # Relations whose refusal differs from a missing target's by design (said why at the row).
    exempt: frozenset[str] = frozenset()
    page: bool = False  # a web page: the relation comes with its cookie


def _counter() -> Callable[[], int]:
    state = {"n": 0}

    def next_n() -> int:
        state["n"] += 1
        return state["n"]

    return next_n


_next = _counter()


def _new_account(world: World, relation: str, value: str = "") -> dict[str, str]:
    return {"username": f"m_new_{_next()}", "password": PASSWORD}


def _author_login(world: World, relation: str, value: str = "") -> dict[str, str]:
    return {"username": "author", "password": PASSWORD}


# The author's credentials that fail are still the author's: their profile form keeps private.
_AUTHOR_CREDENTIALS = {"owner", "revoked", "expired", "nocsrf"}


def _profile_form(world: World, relation: str) -> dict[str, str]:
    form = {"display_name": "M", "bio": "matrix"}
    if relation in _AUTHOR_CREDENTIALS:
        form["is_private"] = "on"
    return form


# Columns: owner follower pending stranger anonymous blocked blocker revoked expired nocsrf
ALL_OK = "200 200 200 200 200 200 200 200 200 200"
SIGNED_IN = "200 200 200 200 401 200 200 401 401 200"
POST_READ = "200 200 404 404 401 404 404 401 401 200"
ACCOUNT_READ = "200 200 403 403 401 404 403 401 401 200"
PAGE_SIGNED_IN = "200 200 200 200 303 200 200 303 303 200"
SIGNED_OUT_FORM = "303 303 303 303 200 303 303 200 200 303"

ROUTES: dict[tuple[str, str], Case] = {
    # --- accounts ---------------------------------------------------------------------------
    ("POST", "/api/v1/accounts"): Case(
        row("201 201 201 201 201 201 201 201 201 201"), json=_new_account
    ),
    ("POST", "/api/v1/auth/token"): Case(row(ALL_OK), json=_author_login),
    ("DELETE", "/api/v1/auth/token"): Case(
        row("204 204 204 204 401 204 204 401 401 403"), fresh="token"
    ),
    ("GET", "/api/v1/me"): Case(row(SIGNED_IN)),
    ("PATCH", "/api/v1/me"): Case(
        row("200 200 200 200 401 200 200 401 401 403"), json=lambda w, r, v: {"bio": "matrix"}
    ),
    # (A wrong password: each account may erase only itself, and must prove it; erasing the
    # world's accounts would end the matrix. tests/api/test_erasure.py erases.)
    ("DELETE", "/api/v1/me"): Case(
        row("401 401 401 401 401 401 401 401 401 403"),
        json=lambda w, r, v: {"password": "not the password"},
    ),
    ("GET", "/api/v1/users/{username}"): Case(
        row("200 200 200 200 401 404 200 401 401 200"), targets=("username",)
    ),
    # --- graph ------------------------------------------------------------------------------
    ("POST", "/api/v1/users/{username}/follow"): Case(
        row("422 200 200 200 401 404 403 401 401 403"), targets=("username",), regraph=True
    ),
    ("DELETE", "/api/v1/users/{username}/follow"): Case(
        row("204 204 204 204 401 404 204 401 401 403"), targets=("username",), regraph=True
    ),
    ("GET", "/api/v1/users/{username}/followers"): Case(row(ACCOUNT_READ), targets=("username",)),
    ("GET", "/api/v1/users/{username}/following"): Case(row(ACCOUNT_READ), targets=("username",)),
    ("GET", "/api/v1/me/follow-requests"): Case(row(SIGNED_IN)),
    # {username} is the one who asked (the pending follower): only the author has that request.
    ("POST", "/api/v1/me/follow-requests/{username}/accept"): Case(
        row("204 404 404 404 401 404 404 401 401 403"), targets=("requester",), regraph=True
    ),
    # (Denying is idempotent: nothing to deny is a 204 too, to anyone.)
    ("DELETE", "/api/v1/me/follow-requests/{username}"): Case(
        row("204 204 204 204 401 204 204 401 401 403"), targets=("requester",), regraph=True
    ),
    # (The blocked cannot find the account, to block it or otherwise.)
    ("POST", "/api/v1/users/{username}/block"): Case(
        row("422 204 204 204 401 404 204 401 401 403"), targets=("username",), regraph=True
    ),
    ("DELETE", "/api/v1/users/{username}/block"): Case(
        row("204 204 204 204 401 404 204 401 401 403"), targets=("username",), regraph=True
    ),
    # --- posts ------------------------------------------------------------------------------
    ("POST", "/api/v1/posts"): Case(row("202 202 202 202 401 202 202 401 401 403"), files=True),
    ("GET", "/api/v1/posts/{post_id}"): Case(row(POST_READ), targets=("post", "video")),
    ("DELETE", "/api/v1/posts/{post_id}"): Case(
        row("204 403 404 404 401 404 404 401 401 403"), targets=("post",), fresh="post"
    ),
    ("GET", "/api/v1/users/{username}/posts"): Case(row(ACCOUNT_READ), targets=("username",)),
    ("GET", "/api/v1/filters"): Case(row(SIGNED_IN)),
    # --- engagement -------------------------------------------------------------------------
    ("POST", "/api/v1/posts/{post_id}/like"): Case(
        row("204 204 404 404 401 404 404 401 401 403"), targets=("post", "video")
    ),
    ("DELETE", "/api/v1/posts/{post_id}/like"): Case(
        row("204 204 404 404 401 404 404 401 401 403"), targets=("post", "video")
    ),
    ("POST", "/api/v1/posts/{post_id}/comments"): Case(
        row("201 201 404 404 401 404 404 401 401 403"),
        targets=("post", "video"),
        json=lambda w, r, v: {"text": "matrix"},
    ),
    ("GET", "/api/v1/posts/{post_id}/comments"): Case(row(POST_READ), targets=("post", "video")),
    # The author's comment (the author of the post may delete any; others none), and the
    # follower's (its own author may delete it too).
    ("DELETE", "/api/v1/posts/{post_id}/comments/{comment_id}"): Case(
        row("204 403 404 404 401 404 404 401 401 403"), targets=("comment",), fresh="comment"
    ),
    # --- feed -------------------------------------------------------------------------------
    ("GET", "/api/v1/feed"): Case(row(SIGNED_IN)),
    # --- stories ----------------------------------------------------------------------------
    ("POST", "/api/v1/stories"): Case(row("202 202 202 202 401 202 202 401 401 403"), files=True),
    ("GET", "/api/v1/stories/tray"): Case(row(SIGNED_IN)),
    ("GET", "/api/v1/users/{username}/stories"): Case(row(ACCOUNT_READ), targets=("username",)),
    ("GET", "/api/v1/stories/{story_id}"): Case(row(POST_READ), targets=("story", "video_story")),
    ("POST", "/api/v1/stories/{story_id}/view"): Case(
        row("204 204 404 404 401 404 404 401 401 403"), targets=("story", "video_story")
    ),
    ("GET", "/api/v1/stories/{story_id}/viewers"): Case(
        row("200 403 404 404 401 404 404 401 401 200"), targets=("story", "video_story")
    ),
    ("DELETE", "/api/v1/stories/{story_id}"): Case(
        row("204 403 404 404 401 404 404 401 401 403"), targets=("story",), fresh="story"
    ),
    ("GET", "/api/v1/me/stories/archive"): Case(row(SIGNED_IN)),
    # A highlight of the author's story: only the author may make one of it.
    ("POST", "/api/v1/me/highlights"): Case(
        row("201 404 404 404 401 404 404 401 401 403"),
        targets=("story",),
        json=lambda w, r, v: {"title": "m", "story_ids": [v]},
    ),
    ("GET", "/api/v1/users/{username}/highlights"): Case(row(ACCOUNT_READ), targets=("username",)),
    ("GET", "/api/v1/highlights/{highlight_id}"): Case(row(POST_READ), targets=("highlight",)),
    ("DELETE", "/api/v1/highlights/{highlight_id}"): Case(
        row("204 403 404 404 401 404 404 401 401 403"), targets=("highlight",), fresh="highlight"
    ),
    # --- privacy: erasure is above (DELETE /api/v1/me) --------------------------------------
    ("POST", "/api/v1/me/export"): Case(row("202 202 202 202 401 202 202 401 401 403")),
    # (Each account's own latest: the row above made one for each.)
    ("GET", "/api/v1/me/export"): Case(row(SIGNED_IN)),
    ("GET", "/api/v1/me/exports/{export_id}"): Case(
        row("200 404 404 404 401 404 404 401 401 200"), targets=("export",)
    ),
    ("GET", "/api/v1/me/exports/{export_id}/download"): Case(
        row("200 404 404 404 401 404 404 401 401 200"),
        targets=("export",),
        query=lambda w: w.targets["export_query"],
    ),
    # --- operations and documentation: nobody's content -------------------------------------
    ("GET", "/healthz"): Case(row(ALL_OK)),
    ("GET", "/readyz"): Case(row(ALL_OK)),
    ("GET", "/metrics"): Case(row(ALL_OK)),
    ("GET", "/docs"): Case(row(ALL_OK)),
    ("GET", "/docs/static/{name}"): Case(row(ALL_OK), targets=("docs_file",)),
    ("GET", "/openapi.json"): Case(row(ALL_OK)),
    # --- the web app (each relation with its cookie) ----------------------------------------
    # (Signed out, the home page is the welcome page.)
    ("GET", "/"): Case(row(ALL_OK), page=True),
    # (Someone signed in is sent home from the sign-up and sign-in forms.)
    ("GET", "/signup"): Case(row(SIGNED_OUT_FORM), page=True),
    ("POST", "/signup"): Case(
        row("303 303 303 303 303 303 303 303 303 403"), form=_new_account, page=True
    ),
    ("GET", "/signin"): Case(row(SIGNED_OUT_FORM), page=True),
    ("POST", "/signin"): Case(
        row("303 303 303 303 303 303 303 303 303 403"), form=_author_login, page=True
    ),
    # (A browser with no session has no sign-out form: its token is bound to no session.)
    ("POST", "/signout"): Case(
        row("303 303 303 303 403 303 303 303 303 403"), fresh="token", page=True
    ),
    ("GET", "/new"): Case(row(PAGE_SIGNED_IN), page=True),
    ("GET", "/requests"): Case(row(PAGE_SIGNED_IN), page=True),
    ("GET", "/settings/profile"): Case(row(PAGE_SIGNED_IN), page=True),
    ("POST", "/settings/profile"): Case(
        row("303 303 303 303 303 303 303 303 303 403"), form=_profile_form, page=True
    ),
    ("GET", "/settings/account"): Case(row(PAGE_SIGNED_IN), page=True),
    ("POST", "/settings/export"): Case(
        row("303 303 303 303 303 303 303 303 303 403"), form=lambda w, r: {}, page=True
    ),
    # (A wrong password, as DELETE /api/v1/me above: each account may erase only itself.)
    ("POST", "/settings/delete"): Case(
        row("401 401 401 401 303 401 401 303 303 403"),
        form=lambda w, r: {"password": "not the password"},
        page=True,
    ),
    ("GET", "/p/{post_id}"): Case(
        row("200 200 404 404 303 404 404 303 303 200"), targets=("post", "video"), page=True
    ),
    ("GET", "/static/{name}"): Case(row(ALL_OK), targets=("static_file",), page=True),
    # A signed-out visitor is asked to sign in to an account's page, and gets 404 for a path
    # that is no account: by design (routes.py: sign-up tells whether a name is taken anyway).
    ("GET", "/{username}"): Case(
        row("200 200 200 200 303 404 200 303 303 200"),
        targets=("username",),
        page=True,
        exempt=frozenset({"anonymous", "revoked", "expired"}),
    ),
}

# The media origin: a route of its own kind (no caller, a signature), checked by the media test.
MEDIA_ROUTES = {("GET", "/media/{key:path}"), ("HEAD", "/media/{key:path}")}
# Starlette's HEAD twin of the OpenAPI document's GET (every other HEAD is the GET's, by
# api/head.py, and answers as the GET's row says).
FRAMEWORK_ROUTES = {("HEAD", "/openapi.json")}


def route_table(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route the app answers: its own, and those of each router it
    includes (FastAPI keeps an included router whole, and lists its routes' effective paths)."""
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        entries = [(c.path, c.methods) for c in contexts()] if contexts else []
        if isinstance(route, Route):
            entries.append((route.path, route.methods))
        for path, methods in entries:
            found.update((method, path) for method in methods or ())
    assert len(found) > 40, found  # (the routers' routes were found, not just the app's own)
    return found


async def test_every_route_of_the_app_has_a_row() -> None:
    routes = route_table(create_app(Settings(secret_key="x")))
    named = set(ROUTES) | MEDIA_ROUTES | FRAMEWORK_ROUTES
    assert routes - named == set(), "routes with no row in the authorisation matrix"
    assert named - routes == set(), "rows for routes the app does not have"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(matrix_settings: Settings, clips: dict[str, Clip]) -> AsyncIterator[World]:
    settings = matrix_settings
    async for built in build_world(settings, clips["rotated"]):
        yield built


# --- one request ---------------------------------------------------------------------------


_TARGET_VALUES: dict[str, Callable[[World], str]] = {
    "username": lambda w: w.usernames["owner"],
    "requester": lambda w: w.usernames["pending"],
    "docs_file": lambda w: "swagger-init.js",
    "static_file": lambda w: "app.js",
}
_MISSING: dict[str, str] = {
    "username": MISSING_USER,
    "requester": BYSTANDER,
    "docs_file": "nothing.js",
    "static_file": "nothing.js",
}


def _fill(path: str, target: str | None, value: str, world: World) -> str:
    """The path with its placeholder for `target` set to `value` (the others: their own)."""
    if "{comment_id}" in path:
        path = path.replace("{post_id}", world.targets["post"]).replace("{comment_id}", value)
    return re.sub(r"\{[a-z_]+\}", value, path) if target else path


async def _fresh(world: World, kind: str, relation: str) -> str:
    """A new target of this kind, for a relation expected to succeed in removing one."""
    g, owner = world.glimpse, world.api_headers("owner")
    if kind == "post":
        response = await g.upload(owner, files=[("f.jpg", jpeg_bytes((64, 64)))])
        return str(response.json()["id"])
    if kind == "comment":
        response = await world.client.post(
            f"/api/v1/posts/{world.targets['post']}/comments", headers=owner, json={"text": "x"}
        )
        return str(response.json()["id"])
    if kind == "story":
        response = await world.client.post(
            "/api/v1/stories",
            headers=owner,
            files=[("file", ("f.jpg", jpeg_bytes((64, 64)), "image/jpeg"))],
        )
        return str(response.json()["id"])
    if kind == "highlight":
        response = await world.client.post(
            "/api/v1/me/highlights",
            headers=owner,
            json={"title": "x", "story_ids": [world.targets["story"]]},
        )
        return str(response.json()["id"])
    raise AssertionError(kind)


async def _request(
    world: World,
    method: str,
    path: str,
    case: Case,
    relation: str,
    target: str | None,
    value: str,
) -> httpx.Response:
    url = _fill(path, target, value, world)
    if case.query is not None:
        url = f"{url}?{case.query(world)}"
    headers = world.page_headers(relation) if case.page else world.api_headers(relation)
    kwargs: dict[str, Any] = {}
    if case.json is not None:
        kwargs["json"] = case.json(world, relation, value)
    if case.form is not None or (case.page and method == "POST"):
        form = case.form(world, relation) if case.form is not None else {}
        signed_out_form = path in ("/signup", "/signin")
        kwargs["data"] = {**form, **world.page_csrf(relation, signed_out_form=signed_out_form)}
    if case.files:
        kwargs["files"] = [("file", ("m.jpg", jpeg_bytes((64, 64)), "image/jpeg"))]
    return await world.client.request(method, url, headers=headers, **kwargs)


_IGNORED_HEADERS = {"x-request-id", "date"}


def _shape(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    """What a client can tell an answer by, but for its request id."""
    headers = sorted(
        (k, v) for k, v in response.headers.multi_items() if k.lower() not in _IGNORED_HEADERS
    )
    body = response.content
    request_id = response.headers.get("x-request-id")
    if request_id:
        body = body.replace(request_id.encode(), b"<request-id>")
    return response.status_code, headers, body


def _secrets(world: World) -> list[str]:
    keys = [k for keys in world.media_keys.values() for k in keys]
    return [CAPTION, VIDEO_CAPTION, COMMENT, FAN_COMMENT, HIGHLIGHT, *keys]


@dataclass
class Tally:
    cases: int = 0
    checks: int = 0
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        self.checks += 1
        if not ok:
            self.failures.append(what)


TALLY = Tally()


def _swap_credential(world: World, relation: str, token: str) -> Callable[[], None]:
    old = world.tokens[relation]
    world.tokens[relation] = token

    def undo() -> None:
        world.tokens[relation] = old

    return undo


async def _run_case(
    world: World, method: str, path: str, case: Case, relation: str, target: str | None
) -> None:
    expected = case.expect[relation]
    value = world.targets.get(target, "") if target else ""
    if target in _TARGET_VALUES:
        value = _TARGET_VALUES[target](world)
    succeeds = expected < 400 and relation != "anonymous"
    undo = None
    if case.fresh == "token" and succeeds and relation in world.usernames:
        undo = _swap_credential(world, relation, await world.token_of(relation))
    elif case.fresh and case.fresh != "token" and succeeds:
        value = await _fresh(world, case.fresh, relation)
    try:
        response = await _request(world, method, path, case, relation, target, value)
    finally:
        if undo is not None:
            undo()
    name = f"{method} {path} [{target or '-'}] as {relation}"
    TALLY.cases += 1
    TALLY.check(
        response.status_code == expected,
        f"{name}: {response.status_code}, expected {expected}: {response.text[:200]}",
    )
    if relation not in SEES:
        leaked = [s for s in _secrets(world) if s in response.text]
        TALLY.check(not leaked, f"{name}: the answer carries {leaked}")
    if target and response.status_code in (401, 403, 404) and relation not in case.exempt:
        if response.status_code == 403 and relation != "nocsrf":
            return  # a refusal about what the caller already knows (a private account's grid)
        missing = _MISSING.get(target, MISSING_ID)
        other = await _request(world, method, path, case, relation, target, missing)
        TALLY.check(
            _shape(response) == _shape(other),
            f"{name}: refused otherwise than a missing target: {_shape(response)} vs "
            f"{_shape(other)}",
        )
    if case.regraph:
        await world.restore_graph()


async def test_every_route_answers_every_relation_as_the_table_says(world: World) -> None:
    for (method, path), case in ROUTES.items():
        for target in case.targets or (None,):
            for relation in RELATIONS:
                await _run_case(world, method, path, case, relation, target)
    for failure in TALLY.failures:
        print(failure[:300])
    assert TALLY.failures == [], "\n".join(TALLY.failures)


# --- the media origin ----------------------------------------------------------------------

# Who may fetch the author's media (a URL carries no token: only the account it was signed for).
MEDIA_VIEWERS = ["owner", "follower", "pending", "stranger", "anonymous", "blocked", "blocker"]


def _missing_key(key: str) -> str:
    """A key of the same shape that names nothing (its hash's last digit changed)."""
    stem, _, ext = key.rpartition(".")
    return f"{stem[:-1]}{'0' if stem[-1] != '0' else '1'}.{ext}"


def _media_urls(world: World, key: str, relation: str) -> dict[str, str]:
    """Every URL a relation could try for a key: plain, and signed for itself (as the API
    would sign it, had it shown the post). Anonymous has no account to sign for: viewer 0."""
    urls = world.glimpse.container.media_urls
    viewer = world.ids.get(relation, 0)
    return {
        "plain": urls.url(key, public=True),
        "signed": urls.url(key, public=False, viewer=viewer),
    }


async def test_the_origin_serves_private_media_only_to_who_may_see_the_post(world: World) -> None:
    assert set(world.media_keys) == {"post", "video", "story", "video_story"}
    variants = {
        target: sorted({k.rsplit(".", 1)[1] for k in keys})
        for target, keys in world.media_keys.items()
    }
    # Every kind of variant is there: the photo's JPEG, WebP and AVIF copies, the video's MP4
    # and poster.
    assert variants["post"] == ["avif", "jpg", "webp"] and "mp4" in variants["video"], variants
    assert "mp4" in variants["video_story"], variants
    tally = Tally()
    for target, keys in world.media_keys.items():
        for n, key in enumerate(keys):
            # (HEAD is answered by the same function as GET: asked of one key per target.)
            methods = ("GET", "HEAD") if n == 0 else ("GET",)
            for relation in MEDIA_VIEWERS:
                for kind, url in _media_urls(world, key, relation).items():
                    may = kind == "signed" and relation in {"owner", "follower"}
                    for method in methods:
                        response = await world.client.request(method, url)
                        name = f"{method} {target} {key} {kind} as {relation}"
                        tally.cases += 1
                        tally.check(
                            response.status_code == (200 if may else 404),
                            f"{name}: {response.status_code}",
                        )
                        if may:
                            continue
                        missing = url.replace(key, _missing_key(key))
                        if kind == "signed":  # signed as validly for the missing key
                            missing = _media_urls(world, _missing_key(key), relation)[kind]
                        other = await world.client.request(method, missing)
                        tally.check(
                            _shape(response) == _shape(other),
                            f"{name}: refused otherwise than a missing key",
                        )
    TALLY.cases += tally.cases
    TALLY.checks += tally.checks
    TALLY.failures += tally.failures
    assert tally.failures == [], "\n".join(tally.failures)


async def test_the_matrix_counts(world: World) -> None:
    """Prints the matrix's size (RELIABILITY.md quotes it); runs after the two above."""
    routes = len(ROUTES)
    print(
        f"\nauthorisation matrix: {routes} routes x {len(RELATIONS)} relations,"
        f" {TALLY.cases} cases (targets and media included), {TALLY.checks} checks,"
        f" {len(TALLY.failures)} failures"
    )
