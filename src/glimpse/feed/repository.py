"""All SQL of the feed that reads the posts and follows tables (the feed store has its own)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import User
from glimpse.backends.feed import Entry
from glimpse.graph.models import Follow
from glimpse.graph.visibility import in_feed_of
from glimpse.posts.models import Post, PostStatus

_NO_BOUND = 2**63 - 1


async def followed_posts(
    session: AsyncSession,
    user_id: int,
    below: int | None,
    limit: int,
    *,
    include_pulled: bool = True,
) -> list[Entry]:
    """The naive feed (fan-out on read): the newest ready posts of the accounts the user
    follows, and the user's own, below `below`. What rebuilds a feed and what a walk reads past
    the cached window. `include_pulled=False` leaves out accounts merged in at read time."""
    followed = select(Follow.followee_id).where(Follow.follower_id == user_id)
    if not include_pulled:
        followed = followed.join(User, User.id == Follow.followee_id).where(
            User.feed_pull.is_(False)
        )
    rows = await session.execute(
        select(Post.id, Post.author_id)
        .where(
            Post.status == PostStatus.READY,
            Post.id < (below if below is not None else _NO_BOUND),
            or_(Post.author_id == user_id, Post.author_id.in_(followed)),
        )
        .order_by(Post.id.desc())
        .limit(limit)
    )
    return [(row[0], row[1]) for row in rows]


async def posts_of_authors(
    session: AsyncSession, author_ids: Collection[int], below: int | None, limit: int
) -> list[Entry]:
    """The newest ready posts of these accounts below `below` (the hybrid merge of accounts
    too large to fan out, and a new follow's recent posts): one index range per author."""
    if not author_ids:
        return []
    rows = await session.execute(
        select(Post.id, Post.author_id)
        .where(
            Post.author_id.in_(list(author_ids)),
            Post.status == PostStatus.READY,
            Post.id < (below if below is not None else _NO_BOUND),
        )
        .order_by(Post.id.desc())
        .limit(limit)
    )
    return [(row[0], row[1]) for row in rows]


async def feed_posts(
    session: AsyncSession, viewer_id: int, post_ids: Sequence[int]
) -> dict[int, Post]:
    """Those of these posts that belong in the viewer's feed now (graph.visibility.in_feed_of):
    whatever the cache says, an unfollow, a block or a deletion counts from the very next read."""
    if not post_ids:
        return {}
    rows = await session.execute(
        select(Post).where(Post.id.in_(list(post_ids)), in_feed_of(viewer_id))
    )
    return {post.id: post for post in rows.scalars()}
