"""Chooses the feed store from GLIMPSE_CACHE_URL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from glimpse.backends.feed.base import Entry, FeedStore, FeedStoreUnavailable, FeedWindow
from glimpse.backends.feed.sql import SqlFeedStore
from glimpse.backends.redis_client import is_redis_url, parse_redis_url
from glimpse.db.database import Database

if TYPE_CHECKING:
    from redis.asyncio import Redis


def feed_store_from_url(
    url: str,
    db: Database,
    *,
    cap: int,
    idle_ttl: float = 14 * 86400.0,
    redis: Redis | None = None,
) -> FeedStore:
    """`redis`: the process's client for a Redis URL (the container opens one per process)."""
    if url.startswith("sql:"):
        return SqlFeedStore(db, cap=cap)
    if is_redis_url(url):
        if redis is None:
            raise ValueError("a Redis cache URL needs the process's Redis client")
        # Imported here: redis-py comes with the `redis` extra, for those who use it.
        from glimpse.backends.feed.redis import RedisFeedStore

        return RedisFeedStore(redis, prefix=parse_redis_url(url).prefix, cap=cap, idle_ttl=idle_ttl)
    raise ValueError(
        f"unsupported cache URL {url!r} (supported: sql://, redis://, rediss://, unix://)"
    )


__all__ = [
    "Entry",
    "FeedStore",
    "FeedStoreUnavailable",
    "FeedWindow",
    "SqlFeedStore",
    "feed_store_from_url",
]
