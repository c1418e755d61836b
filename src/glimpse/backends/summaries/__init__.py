"""Chooses the post-summary cache from GLIMPSE_CACHE_URL: in this process's memory (sql://,
the embedded default), or in Redis behind a first level in memory (redis://...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from glimpse.backends.redis_client import is_redis_url, parse_redis_url
from glimpse.backends.summaries.base import PostSummaryCache, Summary
from glimpse.backends.summaries.memory import MemorySummaryCache

if TYPE_CHECKING:
    from redis.asyncio import Redis


def summary_cache_from_url(
    url: str,
    *,
    expect_avif: bool,
    ttl_seconds: int,
    local_posts: int = 20_000,
    redis: Redis | None = None,
) -> PostSummaryCache:
    """`local_posts`: how many summaries this process keeps in memory (0: none, every page asks
    the next level)."""
    first_level = MemorySummaryCache(local_posts, expect_avif=expect_avif)
    if not is_redis_url(url):
        return first_level
    if redis is None:
        raise ValueError("a Redis cache URL needs the process's Redis client")
    # Imported here: redis-py comes with the `redis` extra, for those who use it.
    from glimpse.backends.summaries.redis import RedisSummaryCache

    return RedisSummaryCache(
        redis, prefix=parse_redis_url(url).prefix, ttl_seconds=ttl_seconds, first_level=first_level
    )


__all__ = ["MemorySummaryCache", "PostSummaryCache", "Summary", "summary_cache_from_url"]
