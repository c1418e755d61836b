"""All SQL of likes and comments. Counters on the post move in the same transaction, by the rows
a statement really added or removed, so they stay exact under any number of racing requests."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import User
from glimpse.db.statements import insert_ignoring_duplicates
from glimpse.engagement.models import Comment, Like
from glimpse.graph.visibility import blocked_between
from glimpse.posts.models import Post


async def add_like(session: AsyncSession, post_id: int, user_id: int, now: datetime) -> bool:
    added = await insert_ignoring_duplicates(
        session, Like, post_id=post_id, user_id=user_id, created_at=now
    )
    if added:
        await session.execute(
            update(Post).where(Post.id == post_id).values(like_count=Post.like_count + 1)
        )
    return added


async def remove_like(session: AsyncSession, post_id: int, user_id: int) -> bool:
    result = await session.execute(
        delete(Like).where(Like.post_id == post_id, Like.user_id == user_id)
    )
    removed = bool(result.rowcount)  # type: ignore[attr-defined]
    if removed:
        await session.execute(
            update(Post).where(Post.id == post_id).values(like_count=Post.like_count - 1)
        )
    return removed


async def add_comment(session: AsyncSession, comment: Comment) -> None:
    session.add(comment)
    await session.flush()
    await session.execute(
        update(Post).where(Post.id == comment.post_id).values(comment_count=Post.comment_count + 1)
    )


async def comments_page(
    session: AsyncSession, post_id: int, viewer_id: int, after: int | None, limit: int
) -> list[tuple[Comment, User]]:
    """Oldest first; never those of accounts that block the viewer or that the viewer blocks."""
    query = (
        select(Comment, User)
        .join(User, User.id == Comment.author_id)
        .where(Comment.post_id == post_id, ~blocked_between(viewer_id, Comment.author_id))
    )
    if after is not None:
        query = query.where(Comment.id > after)
    rows = await session.execute(query.order_by(Comment.id).limit(limit))
    return [(row[0], row[1]) for row in rows]


async def delete_of_post(session: AsyncSession, post_id: int) -> None:
    await session.execute(delete(Like).where(Like.post_id == post_id))
    await session.execute(delete(Comment).where(Comment.post_id == post_id))


async def get_comment(session: AsyncSession, comment_id: int) -> Comment | None:
    return await session.get(Comment, comment_id)


async def delete_comment(session: AsyncSession, comment_id: int) -> bool:
    """Delete the comment, taking it off its post's count if this call really deleted it."""
    deleted = await session.execute(
        delete(Comment).where(Comment.id == comment_id).returning(Comment.post_id)
    )
    post_ids = list(deleted.scalars())
    for post_id in post_ids:
        await session.execute(
            update(Post).where(Post.id == post_id).values(comment_count=Post.comment_count - 1)
        )
    return bool(post_ids)
