"""What the erasure and export tests look at from outside the API: every feed entry the cache
holds (the SQL feed store's tables, or the Redis keys of the test's prefix), and every row that
names an account."""

from __future__ import annotations

from pathlib import Path

import redis
from sqlalchemy import select, text

from glimpse.backends.feed.redis import RedisFeedStore
from glimpse.posts import repository as posts_repository
from glimpse.posts.models import Post
from tests.conftest import Glimpse
from tests.redis_service import BASE_URL, DB

Headers = dict[str, str]


async def cached_feeds(glimpse: Glimpse) -> dict[int, set[tuple[int, int]]]:
    """Every materialised feed: user id -> {(post id, author id)}."""
    container = glimpse.container
    feeds: dict[int, set[tuple[int, int]]] = {}
    if isinstance(container.feed_store, RedisFeedStore):
        prefix = container.settings.cache_url.rsplit("prefix=", 1)[1]
        client = redis.Redis.from_url(f"{BASE_URL}/{DB}")
        try:
            for key in client.scan_iter(match=f"{prefix}feed:*", count=1000):
                name = key.decode()
                if name.endswith(":meta"):
                    continue
                user = int(name.rsplit(":", 1)[1])
                entries = feeds.setdefault(user, set())
                for member in client.zrange(key, 0, -1):
                    if member:  # the empty member only says the set exists
                        post, _, author = member.decode().partition(":")
                        entries.add((int(post), int(author)))
        finally:
            client.close()
        return feeds
    async with container.db.read() as s:
        for (user,) in await s.execute(text("select user_id from feeds")):
            feeds.setdefault(int(user), set())
        rows = await s.execute(text("select user_id, post_id, author_id from feed_entries"))
        for user, post, author in rows:
            feeds.setdefault(int(user), set()).add((int(post), int(author)))
    return feeds


# Every column that names an account, table by table.
ACCOUNT_COLUMNS = {
    "users": ["id"],
    "access_tokens": ["user_id"],
    "posts": ["author_id"],
    "media": ["author_id"],
    "stories": ["author_id"],
    "story_views": ["viewer_id"],
    "highlights": ["owner_id"],
    "likes": ["user_id"],
    "comments": ["author_id"],
    "follows": ["follower_id", "followee_id"],
    "follow_requests": ["requester_id", "target_id"],
    "blocks": ["blocker_id", "blocked_id"],
    "upload_usage": ["user_id"],
    "feeds": ["user_id"],
    "feed_entries": ["user_id", "author_id"],
    "account_exports": ["user_id"],
}


async def rows_naming(glimpse: Glimpse, user_id: int) -> dict[str, int]:
    """How many rows of each table name this account (tables with none left out)."""
    found: dict[str, int] = {}
    async with glimpse.container.db.read() as s:
        for table, columns in ACCOUNT_COLUMNS.items():
            where = " or ".join(f"{c} = :u" for c in columns)
            n = (
                await s.execute(text(f"select count(*) from {table} where {where}"), {"u": user_id})
            ).scalar_one()
            if n:
                found[table] = int(n)
    return found


async def keys_of(glimpse: Glimpse, author_id: int) -> set[str]:
    async with glimpse.container.db.read() as s:
        post_ids = (await s.execute(select(Post.id).where(Post.author_id == author_id))).scalars()
        keys: set[str] = set()
        for post_id in list(post_ids):
            keys.update(await posts_repository.keys_of_post(s, post_id))
    return keys


def stored_keys(glimpse: Glimpse) -> set[str]:
    root = glimpse.container.settings.data_dir / "media"
    return {str(Path(p).relative_to(root)) for p in glimpse.stored_files()}
