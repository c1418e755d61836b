"""All SQL of the feed that reads the posts and follows tables (the feed store has its own).

These run on every feed read, so they go through the quick path (Database.fetch): statements
built once, here, with their parameters bound at each call.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Executable, bindparam, or_, select

from glimpse.accounts.models import User
from glimpse.backends.feed import Entry
from glimpse.db.database import Database
from glimpse.engagement.models import Comment, Like
from glimpse.feed.models import FeedMark
from glimpse.graph.models import Follow
from glimpse.graph.visibility import in_feed_of
from glimpse.posts.models import Post, PostKind, PostStatus
from glimpse.posts.views import POST_COLUMN_NAMES, POST_COLUMNS

# A post as feed_posts returns it: the columns of PostRow, in its order, as the database gave
# them (PostRow.from_row makes one). A ranked read looks at a whole window of candidates and
# serves a page of them, so only the posts it serves pay for parsing their timestamps.
PostValues = tuple[Any, ...]
LIKE_COUNT = POST_COLUMN_NAMES.index("like_count")
COMMENT_COUNT = POST_COLUMN_NAMES.index("comment_count")

_NO_BOUND = 2**63 - 1


def _followed_posts(include_pulled: bool) -> Executable:
    followed = select(Follow.followee_id).where(Follow.follower_id == bindparam("user"))
    if not include_pulled:
        followed = followed.join(User, User.id == Follow.followee_id).where(
            User.feed_pull.is_(False)
        )
    return (
        select(Post.id, Post.author_id)
        .where(
            Post.kind == PostKind.POST,
            Post.status == PostStatus.READY,
            Post.id < bindparam("below"),
            or_(Post.author_id == bindparam("user"), Post.author_id.in_(followed)),
        )
        .order_by(Post.id.desc())
        .limit(bindparam("limit"))
    )


_FOLLOWED_POSTS = _followed_posts(include_pulled=True)
_FOLLOWED_PUSHED_POSTS = _followed_posts(include_pulled=False)
_POSTS_OF_AUTHORS = (
    select(Post.id, Post.author_id)
    .where(
        Post.author_id.in_(bindparam("authors", expanding=True)),
        Post.kind == PostKind.POST,
        Post.status == PostStatus.READY,
        Post.id < bindparam("below"),
    )
    .order_by(Post.id.desc())
    .limit(bindparam("limit"))
)
_FEED_POSTS = select(*POST_COLUMNS).where(
    Post.id.in_(bindparam("ids", expanding=True)), in_feed_of(bindparam("viewer"))
)
_PULLED_FOLLOWED = (
    select(User.id)
    .join(Follow, Follow.followee_id == User.id)
    .where(Follow.follower_id == bindparam("user"), User.feed_pull.is_(True))
)
_POST_COUNTS = select(Post.id, Post.like_count, Post.comment_count).where(
    Post.id.in_(bindparam("ids", expanding=True))
)
_FEED_MARKS = select(FeedMark.user_id, FeedMark.mark).where(
    FeedMark.user_id.in_(bindparam("ids", expanding=True))
)
_LIKED_AUTHORS = (
    select(Post.author_id)
    .join(Like, Like.post_id == Post.id)
    .where(Like.user_id == bindparam("viewer"), Like.created_at >= bindparam("since"))
)
_COMMENTED_AUTHORS = (
    select(Post.author_id)
    .join(Comment, Comment.post_id == Post.id)
    .where(Comment.author_id == bindparam("viewer"), Comment.created_at >= bindparam("since"))
)


async def followed_posts(
    db: Database,
    user_id: int,
    below: int | None,
    limit: int,
    *,
    include_pulled: bool = True,
    at_least: str | None = None,
) -> list[Entry]:
    """The naive feed (fan-out on read): the newest ready posts of the accounts the user
    follows, and the user's own, below `below`. What rebuilds a feed and what a walk reads past
    the cached window. `include_pulled=False` leaves out accounts merged in at read time."""
    statement = _FOLLOWED_POSTS if include_pulled else _FOLLOWED_PUSHED_POSTS
    rows = await db.fetch(
        statement,
        {"user": user_id, "below": below if below is not None else _NO_BOUND, "limit": limit},
        replica=True,
        at_least=at_least,
    )
    return [(row[0], row[1]) for row in rows]


async def posts_of_authors(
    db: Database,
    author_ids: Collection[int],
    below: int | None,
    limit: int,
    *,
    replica: bool = False,
) -> list[Entry]:
    """The newest ready posts of these accounts below `below` (the hybrid merge of accounts
    too large to fan out, and a new follow's recent posts): one index range per author."""
    if not author_ids:
        return []
    rows = await db.fetch(
        _POSTS_OF_AUTHORS,
        {
            "authors": sorted(author_ids),
            "below": below if below is not None else _NO_BOUND,
            "limit": limit,
        },
        replica=replica,
    )
    return [(row[0], row[1]) for row in rows]


async def feed_posts(
    db: Database, viewer_id: int, post_ids: Sequence[int]
) -> dict[int, PostValues]:
    """Those of these posts that belong in the viewer's feed now (graph.visibility.in_feed_of):
    whatever the cache says, an unfollow, a block or a deletion counts from the very next read."""
    if not post_ids:
        return {}
    rows = await db.fetch(_FEED_POSTS, {"ids": list(post_ids), "viewer": viewer_id}, replica=True)
    return {row[0]: row for row in rows}


async def followed_pull_accounts(db: Database, user_id: int) -> list[int]:
    """The accounts this user follows whose posts are merged into feeds at read time."""
    return [row[0] for row in await db.fetch(_PULLED_FOLLOWED, {"user": user_id}, replica=True)]


async def interactions_by_author(db: Database, viewer_id: int, since: datetime) -> dict[int, int]:
    """How often the viewer liked or commented on each author's posts since `since`: the
    feed's affinity. Two index range scans over the viewer's own recent activity."""
    counts: dict[int, int] = {}
    for statement in (_LIKED_AUTHORS, _COMMENTED_AUTHORS):
        for (author_id,) in await db.fetch(
            statement, {"viewer": viewer_id, "since": since}, replica=True
        ):
            counts[author_id] = counts.get(author_id, 0) + 1
    counts.pop(viewer_id, None)  # liking one's own posts is no affinity
    return counts


# A post's like and comment counts.
Counts = tuple[int, int]


async def post_counts(db: Database, post_ids: Collection[int]) -> dict[int, Counts]:
    """The like and comment counts of these posts (those that still exist), read where the
    feed's posts are read: what a kept page looks at before it is served past its time."""
    if not post_ids:
        return {}
    rows = await db.fetch(_POST_COUNTS, {"ids": sorted(post_ids)}, replica=True)
    return {row[0]: (row[1], row[2]) for row in rows}


async def feed_marks(db: Database, account_ids: Collection[int]) -> dict[int, int]:
    """The feed marks of these accounts (migration 0013; an account without a row is at 0).
    Read where the feed's posts are read (a replica, if any), so that a page and the marks it
    is kept under agree."""
    if not account_ids:
        return {}
    rows = await db.fetch(_FEED_MARKS, {"ids": sorted(account_ids)}, replica=True)
    return {row[0]: row[1] for row in rows}


async def lowest_feed_marks(db: Database, account_ids: Collection[int]) -> dict[int, int] | None:
    """The marks a page about to be built may be kept under: with replicas read in turn (or
    the primary, for a caller whose write a replica lacks), the page's statements may each
    come from another source, so the lowest mark any replica holds for each account (marks
    only grow: every source the build may read is at least there). Without replicas, as
    feed_marks. None: a replica did not answer (keep nothing)."""
    replicas = db.replicas
    if replicas is None:
        return await feed_marks(db, account_ids)
    if not account_ids:
        return {}
    each = await replicas.fetch_each(_FEED_MARKS, {"ids": sorted(account_ids)})
    if each is None:
        return None
    seen = [{row[0]: row[1] for row in rows} for rows in each]
    return {a: min(marks.get(a, 0) for marks in seen) for a in account_ids}
