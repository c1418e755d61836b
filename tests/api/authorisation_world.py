"""The world the authorisation matrix runs in (tests/api/test_authorisation_matrix.py), built
once per module: a private account ("author") with a photo post, a video post, a photo story,
a video story, a highlight, comments and an export; and one account or credential for each way
a caller can stand to it. Every relation is made through the public API, as a client would.

The four credentials of the author's own that must fail (a revoked token, an expired one, and
the session cookie without the page's CSRF token) are the author's: the strongest case, since
the same token, good, could do anything to the author's content.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from glimpse.accounts.sessions import PRESESSION_COOKIE, SESSION_COOKIE, csrf_token
from glimpse.accounts.tokens import hash_token
from glimpse.config import Settings
from tests.api.social import accept, block, follow, go_private
from tests.clips import Clip
from tests.conftest import Glimpse, jpeg_bytes, running
from tests.databases import PostgresDatabases, chosen_database

PASSWORD = "correct horse"
BYSTANDER = "m_bystander"

# Every way a caller can stand to the author, in the order the matrix reports them.
RELATIONS = [
    "owner",  # the author
    "follower",  # an approved follower
    "pending",  # asked to follow, not yet accepted
    "stranger",  # signed in, no relation
    "anonymous",  # no credential at all
    "blocked",  # blocked by the author
    "blocker",  # blocks the author
    "revoked",  # the author's token, revoked
    "expired",  # the author's token, past its expiry
    "nocsrf",  # the author's web session cookie, without the page's CSRF token
]
# The relations that are an account of their own (a username and a good token).
ACCOUNTS = ["owner", "follower", "pending", "stranger", "blocked", "blocker"]
# Who may see the author's private content.
SEES = {"owner", "follower", "nocsrf"}

# Text that only those who may see the author's content may ever be sent, in any answer.
CAPTION = "matrix-secret-caption"
VIDEO_CAPTION = "matrix-secret-video"
COMMENT = "matrix-secret-comment"
FAN_COMMENT = "matrix-secret-fan-comment"
HIGHLIGHT = "matrix-secret-highlight"


@dataclass
class World:
    glimpse: Glimpse
    tokens: dict[str, str]  # relation -> the token it presents (none for anonymous)
    ids: dict[str, int]  # account relation -> user id
    usernames: dict[str, str]  # account relation -> username
    targets: dict[str, str] = field(default_factory=dict)  # "post", "story", ... -> id
    media_keys: dict[str, list[str]] = field(default_factory=dict)  # target -> variant keys
    presession: str = "matrix-presession"
    baseline: frozenset[tuple[str, int, int]] = frozenset()

    @property
    def client(self) -> httpx.AsyncClient:
        return self.glimpse.client

    def api_headers(self, relation: str) -> dict[str, str]:
        """How the relation authenticates to /api/v1: a bearer token, or (nocsrf) the cookie."""
        if relation == "anonymous":
            return {}
        if relation == "nocsrf":
            return {"Cookie": f"{SESSION_COOKIE}={self.tokens[relation]}"}
        return {"Authorization": f"Bearer {self.tokens[relation]}"}

    def page_headers(self, relation: str) -> dict[str, str]:
        """How the relation comes to a web page: its session cookie (a browser sends no bearer
        token), or a pre-session for the anonymous visitor."""
        presession = f"{PRESESSION_COOKIE}={self.presession}"
        if relation == "anonymous":
            return {"Cookie": presession}
        return {"Cookie": f"{presession}; {SESSION_COOKIE}={self.tokens[relation]}"}

    def page_csrf(self, relation: str, *, signed_out_form: bool = False) -> dict[str, str]:
        """The CSRF field the relation's forms carry (none for nocsrf, by definition): bound
        to its session, or to the pre-session for the sign-in and sign-up forms."""
        if relation == "nocsrf":
            return {}
        signed_out = signed_out_form or relation == "anonymous"
        bound = self.presession if signed_out else self.tokens[relation]
        return {"csrf_token": csrf_token(self.glimpse.container.secret_key, bound)}

    async def token_of(self, relation: str) -> str:
        """A new good token for an account relation (for routes that spend the token)."""
        response = await self.client.post(
            "/api/v1/auth/token",
            json={"username": self.usernames[relation], "password": PASSWORD},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def graph(self) -> frozenset[tuple[str, int, int]]:
        """Every follow, follow request and block between the world's accounts."""
        ids = tuple(self.ids.values())
        edges = set()
        async with self.glimpse.container.db.read() as session:
            for kind, table, a, b in _EDGES:
                rows = await session.execute(
                    text(f"select {a}, {b} from {table}"),  # (small: the world's accounts)
                )
                edges.update((kind, int(x), int(y)) for x, y in rows if x in ids and y in ids)
        return frozenset(edges)

    async def restore_graph(self) -> None:
        """Puts every relation back as the world began (self.baseline) after a route that
        may have changed one (a follow, a block, an accepted request...), through the API."""
        now = await self.graph()
        if now == self.baseline:
            return
        name = {i: r for r, i in self.ids.items()}
        extra, missing = now - self.baseline, self.baseline - now
        # Blocks lifted first, and made last: a block ends follows and requests both ways.
        for kind, a, b in sorted(extra):
            path = f"/api/v1/users/{self.usernames[name[b]]}"
            method_path = f"{path}/block" if kind == "block" else f"{path}/follow"
            await self._call("DELETE", method_path, self.api_headers(name[a]))
        for kind, a, b in sorted(missing, key=lambda e: e[0] == "block"):
            who, whom = name[a], self.usernames[name[b]]
            if kind == "block":
                await block(self.glimpse, self.api_headers(who), whom)
                continue
            pending = await follow(self.glimpse, self.api_headers(who), whom) == "pending"
            if pending and kind == "follow":
                await accept(self.glimpse, self.api_headers(name[b]), self.usernames[who])
        assert await self.graph() == self.baseline

    async def _call(self, method: str, path: str, headers: dict[str, str]) -> None:
        response = await self.client.request(method, path, headers=headers)
        assert response.status_code in (204, 404), (path, response.text)


# (kind, table, from, to) of the graph's edges.
_EDGES = [
    ("follow", "follows", "follower_id", "followee_id"),
    ("request", "follow_requests", "requester_id", "target_id"),
    ("block", "blocks", "blocker_id", "blocked_id"),
]


def _matrix_settings(folder: Path, database_url: str, backends: dict[str, str]) -> Settings:
    # As tests/conftest.py's `settings`; but the origin's and the feed's memories keep their
    # production lives (10 s, 5 s): the matrix asks them too, so a cache that remembered a
    # viewer's right to see past a change would show.
    return Settings(
        data_dir=folder / "data",
        database_url=database_url,
        secret_key="test-secret",
        media_gc_delay_seconds=0,
        job_retry_base_seconds=0,
        job_retry_max_seconds=0,
        worker_poll_seconds=0.01,
        password_hash_time_cost=1,
        password_hash_memory_kib=1024,
        rate_limits="off",
        **backends,
    )


@pytest.fixture(scope="module")
def matrix_settings(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """Settings for the module's one world, on the stack it is parametrised with
    (tests/api/conftest.py): the embedded default (with the switches of one backend each), or,
    as tests/conftest.py does per test, PostgreSQL, S3, Redis and RabbitMQ."""
    stack = str(getattr(request, "param", None) or "embedded")
    scale = stack == "scale"
    backends: dict[str, str] = {}
    cleanups = []
    database_url = ""
    if chosen_database(stack) == "postgresql":
        databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
        database_url = databases.fresh()
        cleanups.append(lambda: databases.drop(database_url))
    if scale or os.environ.get("GLIMPSE_TEST_STORAGE") == "s3":
        backends["storage_url"] = request.getfixturevalue("s3_server").storage_url()
    if scale or os.environ.get("GLIMPSE_TEST_CACHE") == "redis":
        from tests.redis_service import BASE_URL, DB, redis_or_skip

        client = redis_or_skip()
        prefix = f"glimpse-test-{uuid.uuid4().hex[:12]}:"
        backends["cache_url"] = f"{BASE_URL}/{DB}?prefix={prefix}"

        def drop_keys() -> None:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()

        cleanups.append(drop_keys)
    if scale or os.environ.get("GLIMPSE_TEST_QUEUE") == "rabbitmq":
        backends["queue_url"] = request.getfixturevalue("broker").url()
    try:
        yield _matrix_settings(tmp_path_factory.mktemp("matrix"), database_url, backends)
    finally:
        for cleanup in cleanups:
            cleanup()


async def _token(client: httpx.AsyncClient, username: str) -> str:
    response = await client.post(
        "/api/v1/auth/token", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def _upload_story(glimpse: Glimpse, headers: dict[str, str], name: str, data: bytes) -> str:
    response = await glimpse.client.post(
        "/api/v1/stories", headers=headers, files=[("file", (name, data, "video/mp4"))]
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _keys(media: list[dict[str, Any]]) -> list[str]:
    """The store keys of every variant URL of these media (signed or not)."""
    return [v["url"].split("/media/", 1)[1].split("?")[0] for m in media for v in m["variants"]]


async def build_world(settings: Settings, clip: Clip) -> AsyncIterator[World]:
    """The app over `settings`, and the world in it (a module's fixture yields from this)."""
    async with running(settings) as glimpse:
        yield await _populate(glimpse, clip)


async def _populate(glimpse: Glimpse, clip: Clip) -> World:
    client = glimpse.client
    usernames = {relation: f"m_{relation}" for relation in ACCOUNTS}
    usernames["owner"] = "author"
    tokens: dict[str, str] = {}
    ids: dict[str, int] = {}
    for relation, username in usernames.items():
        headers = await glimpse.signup(username, PASSWORD)
        tokens[relation] = headers["Authorization"].removeprefix("Bearer ")
        me = await client.get("/api/v1/me", headers=headers)
        ids[relation] = int(me.json()["id"])
    world = World(glimpse, tokens, ids, usernames)
    # One who asks nobody anything: the request of someone who never asked is what does not
    # exist, to compare a refused follow request to.
    await glimpse.signup(BYSTANDER, PASSWORD)
    h = world.api_headers
    # The author's own spent credentials.
    tokens["revoked"] = await _token(client, "author")
    revoked = await client.delete("/api/v1/auth/token", headers=h("revoked"))
    assert revoked.status_code == 204, revoked.text
    tokens["expired"] = await _token(client, "author")
    async with glimpse.container.db.write() as session:
        await session.execute(
            text("update access_tokens set expires_at = :past where token_hash = :hash"),
            {"past": datetime(2001, 1, 1), "hash": hash_token(tokens["expired"])},
        )
    tokens["nocsrf"] = await _token(client, "author")

    # The author's content, made while public, then the account goes private.
    owner = h("owner")
    photo = await glimpse.upload(owner, files=[("p.jpg", jpeg_bytes())], caption=CAPTION)
    assert photo.status_code == 202, photo.text
    video_bytes = clip.path.read_bytes()
    video = await glimpse.upload(owner, files=[("v.mp4", video_bytes)], caption=VIDEO_CAPTION)
    assert video.status_code == 202, video.text
    world.targets["post"] = str(photo.json()["id"])
    world.targets["video"] = str(video.json()["id"])
    world.targets["story"] = await _upload_story(glimpse, owner, "s.jpg", jpeg_bytes())
    world.targets["video_story"] = await _upload_story(glimpse, owner, "s.mp4", video_bytes)
    await glimpse.run_jobs()
    highlight = await client.post(
        "/api/v1/me/highlights",
        headers=owner,
        json={"title": HIGHLIGHT, "story_ids": [world.targets["story"]]},
    )
    assert highlight.status_code == 201, highlight.text
    world.targets["highlight"] = str(highlight.json()["id"])
    post = world.targets["post"]
    comment = await client.post(
        f"/api/v1/posts/{post}/comments", headers=owner, json={"text": COMMENT}
    )
    assert comment.status_code == 201, comment.text
    world.targets["comment"] = str(comment.json()["id"])
    await follow(glimpse, h("follower"), "author")
    fan_comment = await client.post(
        f"/api/v1/posts/{post}/comments", headers=h("follower"), json={"text": FAN_COMMENT}
    )
    assert fan_comment.status_code == 201, fan_comment.text
    world.targets["fan_comment"] = str(fan_comment.json()["id"])
    liked = await client.post(f"/api/v1/posts/{post}/like", headers=h("follower"))
    assert liked.status_code == 204, liked.text
    viewed = await client.post(
        f"/api/v1/stories/{world.targets['story']}/view", headers=h("follower")
    )
    assert viewed.status_code == 204, viewed.text
    exported = await client.post("/api/v1/me/export", headers=owner)
    assert exported.status_code == 202, exported.text
    world.targets["export"] = str(exported.json()["id"])
    # Blocked and blocker followed too: the blocks must end that.
    await follow(glimpse, h("blocked"), "author")
    await follow(glimpse, h("blocker"), "author")
    await go_private(glimpse, owner)
    await follow(glimpse, h("pending"), "author")
    await block(glimpse, owner, usernames["blocked"])
    await block(glimpse, h("blocker"), "author")
    world.baseline = await world.graph()
    await glimpse.run_jobs()

    for target in ("post", "video"):
        shown = await client.get(f"/api/v1/posts/{world.targets[target]}", headers=owner)
        assert shown.json()["status"] == "ready", shown.text
        world.media_keys[target] = _keys(shown.json()["media"])
    for target in ("story", "video_story"):
        shown = await client.get(f"/api/v1/stories/{world.targets[target]}", headers=owner)
        assert shown.json()["status"] == "ready", shown.text
        world.media_keys[target] = _keys([shown.json()["media"]])
    ready = await client.get(f"/api/v1/me/exports/{world.targets['export']}", headers=owner)
    assert ready.json()["status"] == "ready", ready.text
    world.targets["export_query"] = ready.json()["url"].split("?", 1)[1]
    return world
