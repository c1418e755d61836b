"""All SQL of erasures and exports. The erasure's statements work in batches of ids: each
transaction deletes at most `limit` rows of a kind, so the job holds the write lock for
milliseconds at a time and a crash loses at most one batch's work (which it then redoes)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import AccessToken, User
from glimpse.engagement.models import Comment, Like
from glimpse.graph.models import Block, Follow, FollowRequest
from glimpse.posts.models import Media, MediaVariant, Post, PostStatus, UploadUsage
from glimpse.privacy.models import AccountErasure, AccountExport, ExportStatus
from glimpse.stories.models import Highlight, HighlightStory, Story, StoryView

# --- erasures -------------------------------------------------------------------------------


async def get_erasure(session: AsyncSession, user_id: int) -> AccountErasure | None:
    return await session.get(AccountErasure, user_id)


async def username_held(session: AsyncSession, username: str, now: datetime) -> bool:
    """Whether an erased account's username is still held (nobody may sign up as it)."""
    row = await session.execute(
        select(AccountErasure.user_id)
        .where(AccountErasure.username == username, AccountErasure.hold_until > now)
        .limit(1)
    )
    return row.first() is not None


async def release_held_usernames(session: AsyncSession, now: datetime) -> int:
    """Forget finished erasures whose hold has passed (the username was all they kept)."""
    result = await session.execute(
        delete(AccountErasure).where(
            AccountErasure.finished_at.is_not(None), AccountErasure.hold_until <= now
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def revoke_tokens(session: AsyncSession, user_id: int, now: datetime) -> None:
    await session.execute(
        update(AccessToken)
        .where(AccessToken.user_id == user_id, AccessToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def hide_posts(session: AsyncSession, author_id: int) -> None:
    """Fail every post and story of the account, in one statement: visibility shows only ready
    posts to others, so they vanish from every read path at once, long before the job's
    batches delete them. (A processing one never becomes ready: only processing posts do.)"""
    await session.execute(
        update(Post)
        .where(Post.author_id == author_id, Post.status != PostStatus.FAILED)
        .values(
            status=PostStatus.FAILED,
            error_code="account_erased",
            error_message="The account is being erased.",
        )
    )


async def post_batch(session: AsyncSession, author_id: int, limit: int) -> list[int]:
    """Ids of some of the account's posts and stories (any status)."""
    rows = await session.execute(
        select(Post.id).where(Post.author_id == author_id).order_by(Post.id).limit(limit)
    )
    return list(rows.scalars())


async def has_posts(session: AsyncSession, author_id: int) -> bool:
    return bool(await post_batch(session, author_id, 1))


async def delete_posts(session: AsyncSession, post_ids: Sequence[int]) -> list[str]:
    """Delete these posts and stories with everything that hangs off them (media, variants,
    likes and comments on them, story views, their places in highlights); the stored keys
    (originals and variants) they named, for a purge."""
    if not post_ids:
        return []
    ids = list(post_ids)
    media_ids = select(Media.id).where(Media.post_id.in_(ids)).scalar_subquery()
    originals = await session.execute(select(Media.original_key).where(Media.post_id.in_(ids)))
    variants = await session.execute(
        select(MediaVariant.key).where(MediaVariant.media_id.in_(media_ids))
    )
    keys = sorted({*originals.scalars(), *variants.scalars()})
    # Explicit children first: foreign-key cascades are not switched on everywhere.
    await session.execute(delete(Like).where(Like.post_id.in_(ids)))
    await session.execute(delete(Comment).where(Comment.post_id.in_(ids)))
    await session.execute(delete(StoryView).where(StoryView.story_id.in_(ids)))
    await session.execute(delete(HighlightStory).where(HighlightStory.story_id.in_(ids)))
    await session.execute(delete(Story).where(Story.id.in_(ids)))
    await session.execute(delete(MediaVariant).where(MediaVariant.media_id.in_(media_ids)))
    await session.execute(delete(Media).where(Media.post_id.in_(ids)))
    await session.execute(delete(Post).where(Post.id.in_(ids)))
    return keys


async def delete_highlights(session: AsyncSession, owner_id: int) -> None:
    owned = select(Highlight.id).where(Highlight.owner_id == owner_id).scalar_subquery()
    await session.execute(delete(HighlightStory).where(HighlightStory.highlight_id.in_(owned)))
    await session.execute(delete(Highlight).where(Highlight.owner_id == owner_id))


async def liked_post_batch(session: AsyncSession, user_id: int, limit: int) -> list[int]:
    rows = await session.execute(
        select(Like.post_id).where(Like.user_id == user_id).order_by(Like.post_id).limit(limit)
    )
    return list(rows.scalars())


async def delete_comment_batch(session: AsyncSession, author_id: int, limit: int) -> int:
    """Delete some of the account's comments, taking each from its post's count by the rows
    really deleted (a comment deleted twice counts once); how many were deleted."""
    batch = await session.execute(
        select(Comment.id).where(Comment.author_id == author_id).order_by(Comment.id).limit(limit)
    )
    comment_ids = list(batch.scalars())
    if not comment_ids:
        return 0
    deleted = await session.execute(
        delete(Comment).where(Comment.id.in_(comment_ids)).returning(Comment.post_id)
    )
    for post_id, n in Counter(deleted.scalars()).items():
        await session.execute(
            update(Post).where(Post.id == post_id).values(comment_count=Post.comment_count - n)
        )
    return len(comment_ids)


async def delete_view_batch(session: AsyncSession, viewer_id: int, limit: int) -> int:
    batch = await session.execute(
        select(StoryView.story_id)
        .where(StoryView.viewer_id == viewer_id)
        .order_by(StoryView.story_id)
        .limit(limit)
    )
    story_ids = list(batch.scalars())
    if story_ids:
        await session.execute(
            delete(StoryView).where(
                StoryView.viewer_id == viewer_id, StoryView.story_id.in_(story_ids)
            )
        )
    return len(story_ids)


async def followee_batch(session: AsyncSession, follower_id: int, limit: int) -> list[int]:
    rows = await session.execute(
        select(Follow.followee_id)
        .where(Follow.follower_id == follower_id)
        .order_by(Follow.followee_id)
        .limit(limit)
    )
    return list(rows.scalars())


async def follower_batch(session: AsyncSession, followee_id: int, limit: int) -> list[int]:
    rows = await session.execute(
        select(Follow.follower_id)
        .where(Follow.followee_id == followee_id)
        .order_by(Follow.follower_id)
        .limit(limit)
    )
    return list(rows.scalars())


async def delete_requests_and_blocks(session: AsyncSession, user_id: int) -> None:
    """Follow requests and blocks, both ways: no counter goes with them."""
    await session.execute(
        delete(FollowRequest).where(
            or_(FollowRequest.requester_id == user_id, FollowRequest.target_id == user_id)
        )
    )
    await session.execute(
        delete(Block).where(or_(Block.blocker_id == user_id, Block.blocked_id == user_id))
    )


async def delete_account_row(session: AsyncSession, user_id: int) -> None:
    """The last of the account: its tokens (web sessions are tokens too), its daily usage,
    and the user row."""
    await session.execute(delete(AccessToken).where(AccessToken.user_id == user_id))
    await session.execute(delete(UploadUsage).where(UploadUsage.user_id == user_id))
    await session.execute(delete(User).where(User.id == user_id))


# --- exports --------------------------------------------------------------------------------


async def get_export(session: AsyncSession, export_id: int) -> AccountExport | None:
    return await session.get(AccountExport, export_id)


async def pending_export_of(session: AsyncSession, user_id: int) -> AccountExport | None:
    rows = await session.execute(
        select(AccountExport)
        .where(AccountExport.user_id == user_id, AccountExport.status == ExportStatus.PENDING)
        .limit(1)
    )
    return rows.scalar_one_or_none()


async def latest_export_of(session: AsyncSession, user_id: int) -> AccountExport | None:
    rows = await session.execute(
        select(AccountExport)
        .where(AccountExport.user_id == user_id)
        .order_by(AccountExport.id.desc())
        .limit(1)
    )
    return rows.scalar_one_or_none()


async def lock_user(session: AsyncSession, user_id: int) -> User | None:
    # Serialises two requests of one account on PostgreSQL (SQLite's writes are serial).
    rows = await session.execute(select(User).where(User.id == user_id).with_for_update())
    return rows.scalar_one_or_none()


async def exports_of(session: AsyncSession, user_id: int) -> list[AccountExport]:
    rows = await session.execute(select(AccountExport).where(AccountExport.user_id == user_id))
    return list(rows.scalars())


async def expired_exports(session: AsyncSession, now: datetime, limit: int) -> list[AccountExport]:
    rows = await session.execute(
        select(AccountExport)
        .where(AccountExport.expires_at <= now)
        .order_by(AccountExport.expires_at)
        .limit(limit)
    )
    return list(rows.scalars())


async def delete_exports(session: AsyncSession, export_ids: Collection[int]) -> None:
    if export_ids:
        await session.execute(delete(AccountExport).where(AccountExport.id.in_(list(export_ids))))
