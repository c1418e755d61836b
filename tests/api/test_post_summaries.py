"""Post summaries in Redis (backends/summaries) seen through the API, with two API processes
over one database and one Redis: what one process cached serves the other, and nothing a user
changes is shown stale: a like or a comment counts on the next read, a deleted post or an erased
account is gone, AVIF copies are listed once made, a new display name shows at once. A Redis
that does not answer costs no request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from glimpse.backends.redis_client import parse_redis_url
from glimpse.backends.summaries.redis import RedisSummaryCache
from glimpse.config import Settings
from glimpse.media import decoding, images
from tests.api.social import feed, follow, go_private, like
from tests.api.test_posts import publish
from tests.conftest import Glimpse, running
from tests.redis_service import RedisProxy, redis_url  # noqa: F401  (a fixture)

Headers = dict[str, str]
AVIF = "image/avif"


@pytest.fixture
def settings(settings: Settings, redis_url: str) -> Settings:  # noqa: F811
    return settings.model_copy(update={"cache_url": redis_url})


@pytest.fixture
async def other(settings: Settings) -> AsyncIterator[Glimpse]:
    """A second API process over the same database and Redis (its memory its own)."""
    async with running(settings) as glimpse:
        yield glimpse


async def only_post(glimpse: Glimpse, headers: Headers) -> dict[str, Any]:
    [post] = (await feed(glimpse, headers))["items"]
    return dict(post)


def avif_names(post: dict[str, Any]) -> list[str]:
    return [v["name"] for v in post["media"][0]["variants"] if v["content_type"] == AVIF]


async def redis_summary_ids(glimpse: Glimpse) -> set[int]:
    cache = glimpse.container.post_summaries
    assert isinstance(cache, RedisSummaryCache)
    redis = glimpse.container.redis
    assert redis is not None
    prefix = parse_redis_url(glimpse.container.settings.cache_url).prefix + "summary:v1:"
    return {int(key.decode().removeprefix(prefix)) async for key in redis.scan_iter(f"{prefix}*")}


async def test_a_summary_one_process_cached_serves_another(
    glimpse: Glimpse, other: Glimpse
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    post = await publish(glimpse, alice)
    seen_here = await only_post(glimpse, bob)
    assert await redis_summary_ids(glimpse) == {int(post["id"])}
    cache = other.container.post_summaries
    assert isinstance(cache, RedisSummaryCache)
    assert await cache.get_many([int(post["id"])]) == {int(post["id"]): seen_here["media"]}
    assert await only_post(other, bob) == seen_here


async def test_likes_and_comments_count_on_the_next_read_of_every_process(
    glimpse: Glimpse, other: Glimpse
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    post = await publish(glimpse, alice)
    for process in (glimpse, other):
        assert (await only_post(process, bob))["like_count"] == 0
    await like(other, bob, post["id"])
    response = await other.client.post(
        f"/api/v1/posts/{post['id']}/comments", headers=alice, json={"text": "hi"}
    )
    assert response.status_code == 201, response.text
    for process in (glimpse, other):
        seen = await only_post(process, bob)
        assert (seen["like_count"], seen["comment_count"], seen["liked_by_me"]) == (1, 1, True)
    await other.client.delete(f"/api/v1/posts/{post['id']}/like", headers=bob)
    assert (await only_post(glimpse, bob))["like_count"] == 0


async def test_a_deleted_post_is_gone_from_every_process_and_from_redis(
    glimpse: Glimpse, other: Glimpse
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    post = await publish(glimpse, alice)
    await only_post(glimpse, bob)
    await only_post(other, bob)
    response = await other.client.delete(f"/api/v1/posts/{post['id']}", headers=alice)
    assert response.status_code == 204
    for process in (glimpse, other):
        assert (await feed(process, bob))["items"] == []
        grid = await process.client.get("/api/v1/users/alice/posts", headers=bob)
        assert grid.json()["items"] == []
    assert await redis_summary_ids(glimpse) == set()


async def test_an_erased_account_leaves_no_summary(glimpse: Glimpse, other: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    await publish(glimpse, alice)
    await only_post(other, bob)
    response = await glimpse.client.request(
        "DELETE", "/api/v1/me", headers=alice, json={"password": "correct horse"}
    )
    assert response.status_code in (202, 204), response.text
    await glimpse.run_jobs()
    for process in (glimpse, other):
        assert (await feed(process, bob))["items"] == []
    assert await redis_summary_ids(glimpse) == set()


async def test_a_new_display_name_shows_at_once_in_every_process(
    glimpse: Glimpse, other: Glimpse
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    await publish(glimpse, alice)
    for process in (glimpse, other):
        assert (await only_post(process, bob))["author"]["display_name"] != "Alice A."
    response = await other.client.patch(
        "/api/v1/me", headers=alice, json={"display_name": "Alice A."}
    )
    assert response.status_code == 200, response.text
    for process in (glimpse, other):
        assert (await only_post(process, bob))["author"]["display_name"] == "Alice A."


@pytest.mark.parametrize("settings", [{"avif_enabled": True}], indirect=True)
async def test_avif_copies_are_listed_by_every_process_once_made(
    glimpse: Glimpse, other: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not images.avif_available():
        pytest.skip("this Pillow cannot write AVIF")
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    entered, leave = threading.Event(), threading.Event()
    real = decoding.avif_in_child

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        leave.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(decoding, "avif_in_child", held)
    response = await glimpse.upload(alice)
    assert response.status_code == 202
    worker = asyncio.create_task(glimpse.run_jobs())
    try:
        assert await asyncio.to_thread(entered.wait, 20)
        # Ready, without its copies yet: this process caches that, here and in Redis.
        assert avif_names(await only_post(glimpse, bob)) == []
        assert await redis_summary_ids(glimpse) == {int(response.json()["id"])}
    finally:
        leave.set()
        await asyncio.wait_for(worker, 60)
    # Another process, whose memory holds nothing, asks Redis: the copies are there.
    assert avif_names(await only_post(other, bob)) == ["w1080", "w640"]
    assert avif_names(await only_post(glimpse, bob)) == ["w1080", "w640"]


async def test_a_redis_that_does_not_answer_costs_no_read(
    settings: Settings,
    redis_url: str,  # noqa: F811
) -> None:
    proxy = RedisProxy()
    await proxy.start()
    prefix = redis_url.rsplit("prefix=", 1)[1]
    async with running(settings.model_copy(update={"cache_url": proxy.url(prefix)})) as glimpse:
        alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
        await follow(glimpse, bob, "alice")
        post = await publish(glimpse, alice)
        before = await only_post(glimpse, bob)
        await proxy.stop()
        other = glimpse.container.post_summaries
        assert isinstance(other, RedisSummaryCache)
        await other.first_level.forget([int(post["id"])])  # as in a process that just started
        after = await only_post(glimpse, bob)  # summaries (and the feed) from the database
        assert after == before
        grid = await glimpse.client.get("/api/v1/users/alice/posts", headers=bob)
        assert grid.status_code == 200 and grid.json()["items"] == [before]
        response = await glimpse.client.delete(f"/api/v1/posts/{post['id']}", headers=alice)
        assert response.status_code == 204
        assert (await feed(glimpse, bob))["items"] == []


async def test_going_private_is_never_taken_from_a_summary(
    glimpse: Glimpse, other: Glimpse
) -> None:
    alice, bob, carol = [await glimpse.signup(n) for n in ("alice", "bob", "carol")]
    await follow(glimpse, bob, "alice")
    post = await publish(glimpse, alice)
    seen = await only_post(other, bob)  # cached, with plain URLs, in Redis and other's memory
    assert not any("sig=" in v["url"] for v in seen["media"][0]["variants"])
    await go_private(glimpse, alice)
    for process in (glimpse, other):
        # bob follows: he still sees it, through URLs signed for him; carol does not follow.
        [again] = (await feed(process, bob))["items"]
        assert all("sig=" in v["url"] for v in again["media"][0]["variants"])
        response = await process.client.get(f"/api/v1/posts/{post['id']}", headers=carol)
        assert response.status_code == 404


async def test_the_web_post_page_and_profile_grid_keep_and_use_the_summaries(
    glimpse: Glimpse,
) -> None:
    from tests.api.test_web_pages import fresh_client, web_sign_up

    alice = await glimpse.signup("alice")
    post = await publish(glimpse, alice)
    key = post["media"][0]["variants"][0]["url"]
    async with fresh_client(glimpse) as browser:
        await web_sign_up(browser, "bob")
        for path in (f"/p/{post['id']}", "/alice"):
            await glimpse.container.post_summaries.forget([int(post["id"])])
            assert await redis_summary_ids(glimpse) == set()
            page = await browser.get(path)
            assert page.status_code == 200 and key.split("?")[0] in page.text
            # The page kept the post's summary (in Redis, for every process) ...
            assert await redis_summary_ids(glimpse) == {int(post["id"])}
            # ... and the next page is made from it: a summary changed by hand shows.
            cache = glimpse.container.post_summaries
            [summary] = (await cache.get_many([int(post["id"])])).values()
            marked = [{**summary[0], "alt_text": "from-the-kept-summary"}]
            await cache.put_many({int(post["id"]): marked})
            assert "from-the-kept-summary" in (await browser.get(path)).text
