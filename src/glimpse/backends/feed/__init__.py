"""Chooses the feed store from GLIMPSE_CACHE_URL."""

from __future__ import annotations

from glimpse.backends.feed.base import Entry, FeedStore, FeedWindow
from glimpse.backends.feed.sql import SqlFeedStore
from glimpse.db.database import Database


def feed_store_from_url(url: str, db: Database, *, cap: int) -> FeedStore:
    if url.startswith("sql:"):
        return SqlFeedStore(db, cap=cap)
    raise ValueError(f"unsupported cache URL {url!r} (supported: sql://)")


__all__ = ["Entry", "FeedStore", "FeedWindow", "SqlFeedStore", "feed_store_from_url"]
