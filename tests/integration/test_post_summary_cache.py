"""The post-summary cache's contract (backends/summaries), passed by the per-process one and
the Redis one alike; then what Redis adds: one process's summaries serve another, an unfinished
summary is kept there briefly too, and a Redis that does not answer holds nothing and costs no
request an error."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis as sync_redis

from glimpse.backends.redis_client import open_redis, parse_redis_url
from glimpse.backends.summaries import MemorySummaryCache, PostSummaryCache
from glimpse.backends.summaries.redis import RedisSummaryCache
from glimpse.posts import views
from tests.redis_service import BASE_URL, DB, redis_url  # noqa: F401  (a fixture)
from tests.servers import free_port

AVIF = "image/avif"


def photo(*content_types: str, url: str = "/media/a") -> list[dict[str, Any]]:
    variants = [
        {"name": "w1080", "width": 1080, "height": 810, "content_type": t, "url": f"{url}.{i}"}
        for i, t in enumerate(content_types)
    ]
    media = {"kind": "image", "width": 1080, "height": 810, "blurhash": "x", "alt_text": ""}
    return [{**media, "variants": variants}]


FINISHED = photo("image/jpeg", "image/webp", AVIF)
UNFINISHED = photo("image/jpeg", "image/webp")

Factory = Callable[..., PostSummaryCache]


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Makes caches that share one Redis prefix (processes of one deployment), or in memory."""
    if request.param == "memory":
        yield lambda **kw: MemorySummaryCache(**kw)
        return
    url = request.getfixturevalue("redis_url")
    target = parse_redis_url(url)
    clients = []

    def redis_cache(**kw: Any) -> PostSummaryCache:
        client = open_redis(target)
        clients.append(client)
        return RedisSummaryCache(client, prefix=target.prefix, first_level=MemorySummaryCache(**kw))

    yield redis_cache
    for client in clients:
        await client.aclose()


async def test_what_is_put_is_got_and_what_is_forgotten_is_gone(make: Factory) -> None:
    cache = make()
    assert await cache.get_many([1, 2]) == {}
    await cache.put_many({1: FINISHED, 2: photo("image/jpeg", AVIF, url="/media/b")})
    assert await cache.get_many([1, 2, 3]) == {
        1: FINISHED,
        2: photo("image/jpeg", AVIF, url="/media/b"),
    }
    await cache.forget([1, 3])
    assert await cache.get_many([1, 2, 3]) == {2: photo("image/jpeg", AVIF, url="/media/b")}


async def test_a_summary_without_its_avif_copies_is_kept_a_moment_only(
    make: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(views.time, "monotonic", lambda: now[0])
    cache = make(expect_avif=True, unfinished_seconds=10)
    await cache.put_many({1: UNFINISHED, 2: FINISHED})
    assert await cache.get_many([1, 2]) == {1: UNFINISHED, 2: FINISHED}
    now[0] += 10
    # (In Redis it lives on 10 s of the server's clock: see the next test.)
    cache = cache if isinstance(cache, MemorySummaryCache) else cache.first_level
    assert await cache.get_many([1, 2]) == {2: FINISHED}


async def test_redis_keeps_an_unfinished_summary_for_seconds_and_a_finished_one_for_its_ttl(
    redis_url: str,  # noqa: F811
) -> None:
    target = parse_redis_url(redis_url)
    client = open_redis(target)
    cache = RedisSummaryCache(
        client,
        prefix=target.prefix,
        ttl_seconds=3600,
        first_level=MemorySummaryCache(expect_avif=True, unfinished_seconds=10),
    )
    await cache.put_many({1: UNFINISHED, 2: FINISHED})
    raw = sync_redis.Redis.from_url(target.url)
    assert 0 < raw.pttl(f"{target.prefix}summary:v1:1") <= 10_000
    assert 3_500_000 < raw.pttl(f"{target.prefix}summary:v1:2") <= 3_600_000
    raw.close()
    await client.aclose()


async def test_a_summary_one_process_made_serves_another_and_a_forget_reaches_it(
    redis_url: str,  # noqa: F811
) -> None:
    target = parse_redis_url(redis_url)
    one, other = open_redis(target), open_redis(target)
    first = RedisSummaryCache(one, prefix=target.prefix)
    second = RedisSummaryCache(other, prefix=target.prefix)
    await first.put_many({1: UNFINISHED})
    assert await second.get_many([1]) == {1: UNFINISHED}  # its own memory held nothing
    await second.first_level.forget([1])
    await first.forget([1])  # say, the AVIF job ran in the first process
    assert await second.get_many([1]) == {}
    await one.aclose()
    await other.aclose()


async def test_a_redis_that_does_not_answer_holds_nothing_and_raises_nothing() -> None:
    target = parse_redis_url(f"redis://127.0.0.1:{free_port()}/{DB}?prefix=x{uuid.uuid4().hex}:")
    client = open_redis(target)
    cache = RedisSummaryCache(client, prefix=target.prefix, first_level=MemorySummaryCache(0))
    await cache.put_many({1: FINISHED})
    assert await cache.get_many([1]) == {}
    await cache.forget([1])
    assert await cache.get_many([1]) == {}  # (and now without asking, for RETRY_SECONDS)
    await client.aclose()


async def test_after_a_failure_reads_and_writes_skip_redis_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A page must not wait for a timeout on every request while Redis is down: after one
    # failure, reads and writes do without it for RETRY_SECONDS; a forget still tries.
    target = parse_redis_url(f"redis://127.0.0.1:{free_port()}/{DB}?prefix=x{uuid.uuid4().hex}:")
    client = open_redis(target)
    cache = RedisSummaryCache(client, prefix=target.prefix, first_level=MemorySummaryCache(0))
    asked: list[str] = []
    for command in ("mget", "pipeline", "delete"):
        real = getattr(client, command)

        def counted(*args: Any, _real: Any = real, _command: str = command, **kw: Any) -> Any:
            asked.append(_command)
            return _real(*args, **kw)

        monkeypatch.setattr(client, command, counted)
    try:
        assert await cache.get_many([1]) == {}
        assert asked == ["mget"]
        await cache.put_many({1: FINISHED})
        assert await cache.get_many([1, 2]) == {}
        await cache.forget([1])
        assert asked == ["mget", "delete"]
        monkeypatch.setattr(cache, "_down_until", 0.0)  # RETRY_SECONDS later
        assert await cache.get_many([1]) == {}
        assert asked == ["mget", "delete", "mget"]
    finally:
        await client.aclose()
