"""Losing the right to see (issue 20, the authorisation matrix's last part): an account that
turns private, a block and an unfollow take the author's content out of every list a viewer is
shown (the home feed, ranked and latest, over the SQL or the Redis feed store; the story tray;
the profile grid; comments; followers and following lists; stories and highlights) on the very
next read, every cache warm; and out of the media origin within its cache TTL.

The caches keep their production lives here but the origin's, made short so the test need not
wait 10 s: the feed's per-viewer memo (5 s) must not carry a right that is gone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api.privacy_helpers import cached_feeds
from tests.api.social import block, feed_ids, follow, go_private, like, unfollow, user_id
from tests.api.test_posts import publish
from tests.conftest import Glimpse, jpeg_bytes

ORIGIN_TTL = 1.0
LIVE_CACHES = {"origin_cache_ttl_seconds": ORIGIN_TTL, "feed_viewer_memo_seconds": 5.0}

Headers = dict[str, str]


async def _author_world(glimpse: Glimpse) -> tuple[dict[str, Headers], dict[str, Any]]:
    people = {name: await glimpse.signup(name) for name in ("author", "fan", "stranger", "foe")}
    author = people["author"]
    await follow(glimpse, people["fan"], "author")
    await follow(glimpse, people["foe"], "author")
    await follow(glimpse, people["author"], "foe")  # (so the foe is in the author's following)
    post = await publish(glimpse, author, caption="soon private")
    story = await glimpse.client.post(
        "/api/v1/stories", headers=author, files=[("file", ("s.jpg", jpeg_bytes(), "image/jpeg"))]
    )
    assert story.status_code == 202, story.text
    await glimpse.run_jobs()
    highlight = await glimpse.client.post(
        "/api/v1/me/highlights",
        headers=author,
        json={"title": "h", "story_ids": [story.json()["id"]]},
    )
    assert highlight.status_code == 201, highlight.text
    for name in ("fan", "foe"):
        await like(glimpse, people[name], post["id"])
        said = await glimpse.client.post(
            f"/api/v1/posts/{post['id']}/comments", headers=people[name], json={"text": name}
        )
        assert said.status_code == 201, said.text
    await glimpse.run_jobs()
    return people, {
        "post": post["id"],
        "story": story.json()["id"],
        "highlight": highlight.json()["id"],
    }


async def _shown(glimpse: Glimpse, viewer: Headers, ids: dict[str, Any]) -> dict[str, bool]:
    """Whether each place shows the author's content to this viewer (every cache read)."""
    get = glimpse.client.get
    post, story = ids["post"], ids["story"]
    tray = (await get("/api/v1/stories/tray", headers=viewer)).json()["items"]
    me = (await get("/api/v1/me", headers=viewer)).json()["username"]
    following = await get(f"/api/v1/users/{me}/following", headers=viewer)
    grid = await get("/api/v1/users/author/posts", headers=viewer)
    stories = await get("/api/v1/users/author/stories", headers=viewer)
    highlights = await get("/api/v1/users/author/highlights", headers=viewer)
    followers = await get("/api/v1/users/author/followers", headers=viewer)
    comments = await get(f"/api/v1/posts/{post}/comments", headers=viewer)

    def items(response: Any) -> list[dict[str, Any]]:
        return list(response.json()["items"]) if response.status_code == 200 else []

    return {
        "feed latest": post in await feed_ids(glimpse, viewer, "latest"),
        "feed ranked": post in await feed_ids(glimpse, viewer, "ranked"),
        "tray": any(s["id"] == story for item in tray for s in item["stories"]),
        "grid": any(p["id"] == post for p in items(grid)),
        "post": (await get(f"/api/v1/posts/{post}", headers=viewer)).status_code == 200,
        "comments": bool(items(comments)),
        "stories": any(s["id"] == story for s in items(stories)),
        "story": (await get(f"/api/v1/stories/{story}", headers=viewer)).status_code == 200,
        "highlights": bool(items(highlights)),
        "highlight": (
            await get(f"/api/v1/highlights/{ids['highlight']}", headers=viewer)
        ).status_code
        == 200,
        "followers list": bool(items(followers)),
        "following list": any(u["username"] == "author" for u in items(following)),
    }


async def _media_url(glimpse: Glimpse, viewer: Headers, post_id: str) -> str:
    shown = await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=viewer)
    assert shown.status_code == 200, shown.text
    return str(shown.json()["media"][0]["variants"][0]["url"])


async def _status_after_ttl(glimpse: Glimpse, url: str) -> int:
    await asyncio.sleep(ORIGIN_TTL + 0.2)
    return (await glimpse.client.get(url)).status_code


EVERYWHERE = {
    "feed latest",
    "feed ranked",
    "tray",
    "grid",
    "post",
    "comments",
    "stories",
    "story",
    "highlights",
    "highlight",
    "followers list",
    "following list",
}
# Where a viewer who does not follow a public account still sees its content.
PUBLIC_PLACES = EVERYWHERE - {"feed latest", "feed ranked", "tray", "following list"}


def _where(shown: dict[str, bool]) -> set[str]:
    return {place for place, yes in shown.items() if yes}


@pytest.mark.parametrize("settings", [LIVE_CACHES], indirect=True)
async def test_going_private_hides_everything_from_a_stranger_at_once(glimpse: Glimpse) -> None:
    people, ids = await _author_world(glimpse)
    stranger, fan = people["stranger"], people["fan"]
    assert _where(await _shown(glimpse, stranger, ids)) == PUBLIC_PLACES  # every cache warm
    assert _where(await _shown(glimpse, fan, ids)) == EVERYWHERE
    plain = await _media_url(glimpse, stranger, ids["post"])
    assert "sig=" not in plain and (await glimpse.client.get(plain)).status_code == 200

    await go_private(glimpse, people["author"])

    assert _where(await _shown(glimpse, stranger, ids)) == set()
    assert _where(await _shown(glimpse, fan, ids)) == EVERYWHERE  # an approved follower
    # The origin remembers the key as public for its TTL at most (settings.py says so).
    assert await _status_after_ttl(glimpse, plain) == 404
    signed = await _media_url(glimpse, fan, ids["post"])
    assert "sig=" in signed and (await glimpse.client.get(signed)).status_code == 200


@pytest.mark.parametrize("settings", [LIVE_CACHES], indirect=True)
@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
async def test_a_block_hides_everything_from_the_blocked_at_once(
    glimpse: Glimpse, private: bool
) -> None:
    people, ids = await _author_world(glimpse)
    foe, fan = people["foe"], people["fan"]
    if private:
        await go_private(glimpse, people["author"])
    assert _where(await _shown(glimpse, foe, ids)) == EVERYWHERE  # every cache warm
    url = await _media_url(glimpse, foe, ids["post"])
    assert (await glimpse.client.get(url)).status_code == 200
    author_id, foe_id = await user_id(glimpse, people["author"]), await user_id(glimpse, foe)
    assert (int(ids["post"]), author_id) in (await cached_feeds(glimpse))[foe_id]

    await block(glimpse, people["author"], "foe")

    assert _where(await _shown(glimpse, foe, ids)) == set()
    profile = await glimpse.client.get("/api/v1/users/author", headers=foe)
    assert profile.status_code == 404
    # Nor does the author's side still list the foe.
    followers = await glimpse.client.get("/api/v1/users/author/followers", headers=fan)
    assert "foe" not in [u["username"] for u in followers.json()["items"]]
    following = await glimpse.client.get("/api/v1/users/author/following", headers=fan)
    assert "foe" not in [u["username"] for u in following.json()["items"]]
    if private:
        assert await _status_after_ttl(glimpse, url) == 404
    else:  # public media is public: the block hides the post, not the bytes of a public URL
        assert (await glimpse.client.get(url)).status_code == 200
    # The feed store itself lets the entries go once the block's job has run.
    await glimpse.run_jobs()
    assert {a for _, a in (await cached_feeds(glimpse)).get(foe_id, set())} <= {foe_id}


@pytest.mark.parametrize("settings", [LIVE_CACHES], indirect=True)
async def test_an_unfollow_of_a_private_account_hides_it_at_once(glimpse: Glimpse) -> None:
    people, ids = await _author_world(glimpse)
    fan = people["fan"]
    await go_private(glimpse, people["author"])
    assert _where(await _shown(glimpse, fan, ids)) == EVERYWHERE
    url = await _media_url(glimpse, fan, ids["post"])
    assert (await glimpse.client.get(url)).status_code == 200

    await unfollow(glimpse, fan, "author")

    assert _where(await _shown(glimpse, fan, ids)) == set()
    assert await _status_after_ttl(glimpse, url) == 404
    fan_id = await user_id(glimpse, fan)
    await glimpse.run_jobs()
    author_id = await user_id(glimpse, people["author"])
    assert author_id not in {a for _, a in (await cached_feeds(glimpse)).get(fan_id, set())}
