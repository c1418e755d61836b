"""The app with its feeds and rate limits in Redis (GLIMPSE_CACHE_URL=redis://...), against a
real server: feeds live there and nowhere else, losing them loses nothing, an outage of Redis
costs no request (feeds are read from the database, counts kept in memory), and every API
process shares one budget."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from glimpse.backends.feed.redis import RedisFeedStore
from glimpse.config import Settings
from tests.api.social import feed, feed_ids, follow, quick_post, user_id
from tests.api.test_posts import publish
from tests.conftest import Glimpse, assert_error, running
from tests.redis_service import RedisProxy, delete_keys, redis_url  # noqa: F401  (a fixture)


@pytest.fixture
def settings(settings: Settings, redis_url: str) -> Settings:  # noqa: F811
    return settings.model_copy(update={"cache_url": redis_url})


async def sql_feed_rows(glimpse: Glimpse) -> int:
    async with glimpse.container.db.read() as s:
        return int((await s.execute(text("select count(*) from feed_entries"))).scalar_one())


async def test_feeds_live_in_redis_and_a_flushed_cache_loses_nothing(
    glimpse: Glimpse,
    redis_url: str,  # noqa: F811
) -> None:
    assert isinstance(glimpse.container.feed_store, RedisFeedStore)
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    bob_id = await user_id(glimpse, bob)
    await follow(glimpse, bob, "alice")
    assert (await feed(glimpse, bob))["items"] == []  # bob's feed is built, in Redis
    first = await publish(glimpse, alice, caption="one")  # upload, process, fan out
    alice_id = await user_id(glimpse, alice)
    later = [await quick_post(glimpse, alice_id, f"post {i}") for i in range(3)]
    await glimpse.run_jobs()
    expected = [str(p) for p in reversed(later)] + [first["id"]]
    window = await glimpse.container.feed_store.window(bob_id, None, 10)
    assert window is not None and [p for p, _ in window.entries] == [int(p) for p in expected]
    assert await sql_feed_rows(glimpse) == 0
    assert await feed_ids(glimpse, bob) == expected

    assert delete_keys(redis_url) > 0  # what FLUSHDB or a restart without persistence does
    assert await glimpse.container.feed_store.window(bob_id, None, 10) is None
    assert await feed_ids(glimpse, bob) == expected  # the very next read is complete
    rebuilt = await glimpse.container.feed_store.window(bob_id, None, 10)
    assert rebuilt is not None and [p for p, _ in rebuilt.entries] == [int(p) for p in expected]


async def test_a_deleted_post_leaves_the_cached_feeds(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    bob_id = await user_id(glimpse, bob)
    await follow(glimpse, bob, "alice")
    await feed(glimpse, bob)
    post = await publish(glimpse, alice)
    assert await feed_ids(glimpse, bob) == [post["id"]]
    response = await glimpse.client.delete(f"/api/v1/posts/{post['id']}", headers=alice)
    assert response.status_code == 204
    assert await feed_ids(glimpse, bob) == []  # at once, before any job
    await glimpse.run_jobs()
    window = await glimpse.container.feed_store.window(bob_id, None, 10)
    assert window is not None and window.entries == []


async def test_readyz_checks_the_cache(glimpse: Glimpse) -> None:
    response = await glimpse.client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["cache"] == "ok"


@pytest.fixture
async def proxy() -> AsyncIterator[RedisProxy]:
    proxy = RedisProxy()
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def test_an_outage_of_redis_costs_no_request_and_no_post(
    settings: Settings,
    redis_url: str,  # noqa: F811
    proxy: RedisProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(RedisFeedStore, "RETRY_SECONDS", 0.0)
    prefix = redis_url.rsplit("prefix=", 1)[1]
    settings = settings.model_copy(
        update={
            "cache_url": proxy.url(prefix),
            "rate_limits": "api=1000/minute",
            # Put off, so that the test decides when the retry is due.
            "job_retry_base_seconds": 60,
        }
    )
    async with running(settings) as glimpse:
        alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
        alice_id, bob_id = await user_id(glimpse, alice), await user_id(glimpse, bob)
        await follow(glimpse, bob, "alice")
        before = await quick_post(glimpse, alice_id, "before")
        await glimpse.run_jobs()
        assert await feed_ids(glimpse, bob) == [str(before)]

        await proxy.stop()
        during = await quick_post(glimpse, alice_id, "during")
        await glimpse.run_jobs()  # the fan-out fails, and waits to be retried
        async with glimpse.container.db.read() as s:
            (waiting,) = (
                await s.execute(text("select last_error from jobs where state = 'queued'"))
            ).one()
        # Retried like a media-store fault: the attempt not counted, for as long as those.
        assert waiting.startswith("storage_unavailable since")
        # Read from the database: complete, and the budget still counted (in memory).
        response = await glimpse.client.get("/api/v1/feed?order=latest", headers=bob)
        assert response.status_code == 200
        assert [p["id"] for p in response.json()["items"]] == [str(during), str(before)]
        assert int(response.headers["RateLimit-Remaining"]) < 1000
        ready = await glimpse.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["cache"].startswith("failed")
        assert ready.json()["checks"]["database"] == "ok"

        await proxy.start()  # back, with everything it held
        await _retry_due_jobs(glimpse)
        window = await glimpse.container.feed_store.window(bob_id, None, 10)
        assert window is not None  # the feed survived, and the retried fan-out reached it
        assert [p for p, _ in window.entries] == [during, before]
        assert await feed_ids(glimpse, bob) == [str(during), str(before)]
        assert (await glimpse.client.get("/readyz")).status_code == 200


async def _retry_due_jobs(glimpse: Glimpse) -> None:
    # The fan-out was put off (not counted as an attempt); make it due now.
    async with glimpse.container.db.write() as s:
        await s.execute(text("update jobs set available_at = 0 where state = 'queued'"))
    await glimpse.run_jobs()


async def test_every_api_process_shares_one_budget(settings: Settings) -> None:
    settings = settings.model_copy(update={"rate_limits": "api=4/minute"})
    async with running(settings) as one, running(settings) as two:
        responses: list[Any] = []
        for i in range(6):
            responses.append(await (one if i % 2 else two).client.get("/api/v1/filters"))
        assert [r.status_code for r in responses] == [401] * 4 + [429] * 2
        assert_error(responses[4], 429, "throttled")


async def test_budgets_still_hold_while_redis_is_down(
    settings: Settings,
    redis_url: str,  # noqa: F811
    proxy: RedisProxy,
) -> None:
    prefix = redis_url.rsplit("prefix=", 1)[1]
    settings = settings.model_copy(
        update={"cache_url": proxy.url(prefix), "rate_limits": "api=3/minute"}
    )
    await proxy.stop()
    async with running(settings) as glimpse:
        statuses = [(await glimpse.client.get("/api/v1/filters")).status_code for _ in range(5)]
        assert statuses == [401] * 3 + [429] * 2
