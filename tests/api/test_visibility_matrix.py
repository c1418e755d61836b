"""One visibility rule over every read route (graph/visibility.py): public and private
authors, against the author, a follower, a stranger, someone the author blocks and someone who
blocks the author. A private account's post never reaches a non-follower through any route,
and the media origin agrees with the API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.api.social import accept, block, feed_ids, follow, go_private
from tests.api.test_posts import publish
from tests.conftest import Glimpse, jpeg_bytes

VIEWERS = ["self", "follower", "stranger", "blocked", "blocker"]


async def _world(
    glimpse: Glimpse, private: bool
) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    author = await glimpse.signup("author")
    headers = {"self": author}
    for name in VIEWERS[1:]:
        headers[name] = await glimpse.signup(name)
    await follow(glimpse, headers["follower"], "author")
    post = await publish(glimpse, author, caption="hello")
    story = await glimpse.client.post(
        "/api/v1/stories", headers=author, files=[("file", ("s.jpg", jpeg_bytes(), "image/jpeg"))]
    )
    assert story.status_code == 202, story.text
    highlight = await glimpse.client.post(
        "/api/v1/me/highlights",
        headers=author,
        json={"title": "h", "story_ids": [story.json()["id"]]},
    )
    assert highlight.status_code == 201, highlight.text
    # (Carried beside the post's own fields: the routes below name them.)
    post = {**post, "story_id": story.json()["id"], "highlight_id": highlight.json()["id"]}
    comment = await glimpse.client.post(
        f"/api/v1/posts/{post['id']}/comments", headers=author, json={"text": "first"}
    )
    assert comment.status_code == 201
    await follow(glimpse, headers["blocked"], "author")  # ended by the block below
    await block(glimpse, author, "blocked")
    await block(glimpse, headers["blocker"], "author")
    if private:
        await go_private(glimpse, author)
    await glimpse.run_jobs()
    return headers, post


def _by_viewer(*statuses: tuple[int, int]) -> dict[str, tuple[int, int]]:
    return dict(zip(VIEWERS, statuses, strict=True))


# What each viewer gets from each route: public author, then private author.
EXPECTED: dict[str, dict[str, tuple[int, int]]] = {
    #                 self        follower    stranger    blocked     blocker
    "profile": _by_viewer((200, 200), (200, 200), (200, 200), (404, 404), (200, 200)),
    "grid": _by_viewer((200, 200), (200, 200), (200, 403), (404, 404), (403, 403)),
    "post": _by_viewer((200, 200), (200, 200), (200, 404), (404, 404), (404, 404)),
    "comments": _by_viewer((200, 200), (200, 200), (200, 404), (404, 404), (404, 404)),
    "followers": _by_viewer((200, 200), (200, 200), (200, 403), (404, 404), (403, 403)),
    "following": _by_viewer((200, 200), (200, 200), (200, 403), (404, 404), (403, 403)),
    "like": _by_viewer((204, 204), (204, 204), (204, 404), (404, 404), (404, 404)),
    "comment": _by_viewer((201, 201), (201, 201), (201, 404), (404, 404), (404, 404)),
    "stories": _by_viewer((200, 200), (200, 200), (200, 403), (404, 404), (403, 403)),
    "story": _by_viewer((200, 200), (200, 200), (200, 404), (404, 404), (404, 404)),
    "view": _by_viewer((204, 204), (204, 204), (204, 404), (404, 404), (404, 404)),
    "viewers": _by_viewer((200, 200), (403, 403), (403, 404), (404, 404), (404, 404)),
    "highlights": _by_viewer((200, 200), (200, 200), (200, 403), (404, 404), (403, 403)),
    "highlight": _by_viewer((200, 200), (200, 200), (200, 404), (404, 404), (404, 404)),
}
IN_FEED = {"self": True, "follower": True, "stranger": False, "blocked": False, "blocker": False}
# The tray shows followed accounts' stories: not one's own.
IN_TRAY = {"self": False, "follower": True, "stranger": False, "blocked": False, "blocker": False}


def _request(route: str, post: dict[str, Any]) -> tuple[str, str, dict[str, Any] | None]:
    post_id, story_id = post["id"], post["story_id"]
    return {
        "profile": ("GET", "/api/v1/users/author", None),
        "grid": ("GET", "/api/v1/users/author/posts", None),
        "post": ("GET", f"/api/v1/posts/{post_id}", None),
        "comments": ("GET", f"/api/v1/posts/{post_id}/comments", None),
        "followers": ("GET", "/api/v1/users/author/followers", None),
        "following": ("GET", "/api/v1/users/author/following", None),
        "like": ("POST", f"/api/v1/posts/{post_id}/like", None),
        "comment": ("POST", f"/api/v1/posts/{post_id}/comments", {"text": "hi"}),
        "stories": ("GET", "/api/v1/users/author/stories", None),
        "story": ("GET", f"/api/v1/stories/{story_id}", None),
        "view": ("POST", f"/api/v1/stories/{story_id}/view", None),
        "viewers": ("GET", f"/api/v1/stories/{story_id}/viewers", None),
        "highlights": ("GET", "/api/v1/users/author/highlights", None),
        "highlight": ("GET", f"/api/v1/highlights/{post['highlight_id']}", None),
    }[route]


@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
async def test_every_read_route_applies_the_one_visibility_rule(
    glimpse: Glimpse, private: bool
) -> None:
    headers, post = await _world(glimpse, private)
    failures = []
    for route, by_viewer in EXPECTED.items():
        method, path, body = _request(route, post)
        for viewer, statuses in by_viewer.items():
            expected = statuses[1 if private else 0]
            response = await glimpse.client.request(
                method, path, headers=headers[viewer], json=body
            )
            if response.status_code != expected:
                failures.append((route, viewer, expected, response.status_code))
            if response.status_code == 200 and route == "grid":
                shown = [p["id"] for p in response.json()["items"]]
                assert shown == [post["id"]], (viewer, shown)
            if response.status_code == 200 and route == "stories":
                shown = [s["id"] for s in response.json()["items"]]
                assert shown == [post["story_id"]], (viewer, shown)
    assert failures == []
    for viewer, expected in IN_TRAY.items():
        tray = await glimpse.client.get("/api/v1/stories/tray", headers=headers[viewer])
        shown = [s["id"] for item in tray.json()["items"] for s in item["stories"]]
        assert (post["story_id"] in shown) is expected, viewer
    for viewer, expected in IN_FEED.items():
        assert (post["id"] in await feed_ids(glimpse, headers[viewer])) is expected, viewer
        assert (post["id"] in await feed_ids(glimpse, headers[viewer], "ranked")) is expected


async def _fetch(glimpse: Glimpse, url: str) -> httpx.Response:
    return await glimpse.client.get(url)


@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
async def test_the_media_origin_follows_the_same_rule(glimpse: Glimpse, private: bool) -> None:
    headers, post = await _world(glimpse, private)
    # What the author is shown: plain URLs for public media, signed ones for private media.
    for viewer in VIEWERS:
        shown = await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=headers[viewer])
        if shown.status_code != 200:
            continue
        url = shown.json()["media"][0]["variants"][0]["url"]
        assert ("sig=" in url) is private
        assert (await _fetch(glimpse, url)).status_code == 200, viewer
    if not private:
        return
    # The follower's signed URL stops working once the follow ends (the origin's cache TTL is
    # 0 in tests), and a URL signed for one viewer cannot be used as another's.
    shown = await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=headers["follower"])
    url = shown.json()["media"][0]["variants"][0]["url"]
    assert (await _fetch(glimpse, url)).status_code == 200
    stranger_id = (await glimpse.client.get("/api/v1/me", headers=headers["stranger"])).json()["id"]
    base, query = url.split("?")
    params = dict(part.split("=") for part in query.split("&"))
    forged = f"{base}?exp={params['exp']}&v={stranger_id}&sig={params['sig']}"
    assert (await _fetch(glimpse, forged)).status_code == 404
    assert (await _fetch(glimpse, base)).status_code == 404
    await glimpse.client.delete("/api/v1/users/author/follow", headers=headers["follower"])
    assert (await _fetch(glimpse, url)).status_code == 404
    # An approved follower of the private account gets working URLs again.
    await follow(glimpse, headers["follower"], "author")
    await accept(glimpse, headers["self"], "follower")
    assert (await _fetch(glimpse, url)).status_code == 200
    # A block reaches the origin too.
    await block(glimpse, headers["self"], "follower")
    assert (await _fetch(glimpse, url)).status_code == 404


async def test_refusing_a_private_post_runs_the_same_statements_as_a_missing_one(
    glimpse: Glimpse,
) -> None:
    # Timing must not tell a stranger whether a private post exists: both 404s do the same reads.
    from sqlalchemy import event

    author, stranger = await glimpse.signup("author"), await glimpse.signup("stranger")
    post = await publish(glimpse, author)
    await go_private(glimpse, author)
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        # (Not the jobs table's: a broker queue's relay polls it in the background, whatever
        # the request does.)
        if " FROM jobs " not in f"{statement} ":
            statements.append(statement.split()[0])

    engine = glimpse.container.db.read_engine.sync_engine
    counts = []
    for post_id in (post["id"], str(int(post["id"]) + 1)):
        for path in (f"/api/v1/posts/{post_id}", f"/api/v1/posts/{post_id}/comments"):
            statements.clear()
            event.listen(engine, "before_cursor_execute", count)
            try:
                response = await glimpse.client.get(path, headers=stranger)
            finally:
                event.remove(engine, "before_cursor_execute", count)
            assert response.status_code == 404
            counts.append(len(statements))
    assert counts[:2] == counts[2:], counts


async def _variant_key(glimpse: Glimpse, post_id: str) -> str:
    async with glimpse.container.db.read() as s:
        return str(
            (
                await s.execute(
                    text(
                        "select v.key from media_variants v join media m on m.id = v.media_id"
                        " where m.post_id = :p limit 1"
                    ),
                    {"p": int(post_id)},
                )
            ).scalar_one()
        )


async def test_a_signed_url_opens_a_processing_post_to_its_author_only(glimpse: Glimpse) -> None:
    author, fan = await glimpse.signup("author"), await glimpse.signup("fan")
    await follow(glimpse, fan, "author")
    post = await publish(glimpse, author)
    async with glimpse.container.db.write() as s:  # say, a second photo still processing
        await s.execute(
            text("update posts set status = 'processing' where id = :p"), {"p": int(post["id"])}
        )
    key = await _variant_key(glimpse, post["id"])
    urls = glimpse.container.media_urls
    ids = {
        name: int((await glimpse.client.get("/api/v1/me", headers=h)).json()["id"])
        for name, h in (("author", author), ("fan", fan))
    }
    assert (
        await glimpse.client.get(urls.url(key, public=False, viewer=ids["author"]))
    ).status_code == 200
    assert (
        await glimpse.client.get(urls.url(key, public=False, viewer=ids["fan"]))
    ).status_code == 404


@pytest.mark.parametrize("settings", [{"origin_cache_ttl_seconds": 60}], indirect=True)
async def test_the_origin_remembers_a_refusal_as_a_refusal(glimpse: Glimpse) -> None:
    author, fan = await glimpse.signup("author"), await glimpse.signup("fan")
    await follow(glimpse, fan, "author")
    post = await publish(glimpse, author)
    await go_private(glimpse, author)
    shown = await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=fan)
    url = shown.json()["media"][0]["variants"][0]["url"]
    await glimpse.client.delete("/api/v1/users/author/follow", headers=fan)
    assert (await glimpse.client.get(url)).status_code == 404
    assert (await glimpse.client.get(url)).status_code == 404  # (from the origin's memory)
