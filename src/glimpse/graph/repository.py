"""All SQL of the social graph. Counters move in the statement's transaction, by the rows a
statement really added or removed (never read-modify-write), so they stay exact however many
requests race."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import User
from glimpse.db.database import Database
from glimpse.db.statements import insert_ignoring_duplicates
from glimpse.graph.models import Block, Follow, FollowRequest
from glimpse.graph.visibility import Relation, blocked_between


async def relation(session: AsyncSession, viewer_id: int, other_id: int) -> Relation:
    if viewer_id == other_id:
        return Relation()
    follows = await session.get(Follow, (viewer_id, other_id))
    requested = await session.get(FollowRequest, (viewer_id, other_id)) if follows is None else None
    blocks = (
        await session.execute(
            select(Block.blocker_id).where(
                or_(
                    (Block.blocker_id == viewer_id) & (Block.blocked_id == other_id),
                    (Block.blocker_id == other_id) & (Block.blocked_id == viewer_id),
                )
            )
        )
    ).scalars()
    blockers = set(blocks)
    return Relation(
        follows=follows is not None,
        requested=requested is not None,
        blocks=viewer_id in blockers,
        blocked_by=other_id in blockers,
    )


async def follow_statuses(
    session: AsyncSession, viewer_id: int, user_ids: Collection[int]
) -> dict[int, str]:
    """The viewer's follow_status towards each of these users (API.md's User)."""
    others = [u for u in set(user_ids) if u != viewer_id]
    statuses = {u: "none" for u in others}
    if viewer_id in user_ids:
        statuses[viewer_id] = "self"
    if others:
        pending = await session.execute(
            select(FollowRequest.target_id).where(
                FollowRequest.requester_id == viewer_id, FollowRequest.target_id.in_(others)
            )
        )
        statuses.update(dict.fromkeys(pending.scalars(), "pending"))
        following = await session.execute(
            select(Follow.followee_id).where(
                Follow.follower_id == viewer_id, Follow.followee_id.in_(others)
            )
        )
        statuses.update(dict.fromkeys(following.scalars(), "following"))
    return statuses


async def add_follow(
    session: AsyncSession, follow_id: int, follower_id: int, followee_id: int
) -> bool:
    added = await insert_ignoring_duplicates(
        session, Follow, id=follow_id, follower_id=follower_id, followee_id=followee_id
    )
    if added:
        await _count_follow(session, follower_id, followee_id, +1)
    return added


async def remove_follow(session: AsyncSession, follower_id: int, followee_id: int) -> bool:
    result = await session.execute(
        delete(Follow).where(Follow.follower_id == follower_id, Follow.followee_id == followee_id)
    )
    removed = bool(result.rowcount)  # type: ignore[attr-defined]
    if removed:
        await _count_follow(session, follower_id, followee_id, -1)
    return removed


async def _count_follow(
    session: AsyncSession, follower_id: int, followee_id: int, delta: int
) -> None:
    await session.execute(
        update(User)
        .where(User.id == followee_id)
        .values(follower_count=User.follower_count + delta)
    )
    await session.execute(
        update(User)
        .where(User.id == follower_id)
        .values(following_count=User.following_count + delta)
    )


async def add_request(
    session: AsyncSession, request_id: int, requester_id: int, target_id: int
) -> bool:
    return await insert_ignoring_duplicates(
        session, FollowRequest, id=request_id, requester_id=requester_id, target_id=target_id
    )


async def remove_request(session: AsyncSession, requester_id: int, target_id: int) -> bool:
    result = await session.execute(
        delete(FollowRequest).where(
            FollowRequest.requester_id == requester_id, FollowRequest.target_id == target_id
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def requesters_of(session: AsyncSession, target_id: int) -> list[int]:
    result = await session.execute(
        select(FollowRequest.requester_id).where(FollowRequest.target_id == target_id)
    )
    return list(result.scalars())


async def add_block(session: AsyncSession, blocker_id: int, blocked_id: int) -> bool:
    return await insert_ignoring_duplicates(
        session, Block, blocker_id=blocker_id, blocked_id=blocked_id
    )


async def remove_block(session: AsyncSession, blocker_id: int, blocked_id: int) -> bool:
    result = await session.execute(
        delete(Block).where(Block.blocker_id == blocker_id, Block.blocked_id == blocked_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def followers_page(
    session: AsyncSession, user_id: int, viewer_id: int, before: int | None, limit: int
) -> list[tuple[int, User]]:
    """(follow id, follower), newest follows first; never an account that blocks the viewer
    or that the viewer blocks (it would show what its own profile hides)."""
    query = (
        select(Follow.id, User)
        .join(User, User.id == Follow.follower_id)
        .where(Follow.followee_id == user_id, ~blocked_between(viewer_id, User.id))
    )
    if before is not None:
        query = query.where(Follow.id < before)
    rows = await session.execute(query.order_by(Follow.id.desc()).limit(limit))
    return [(row[0], row[1]) for row in rows]


async def following_page(
    session: AsyncSession, user_id: int, viewer_id: int, before: int | None, limit: int
) -> list[tuple[int, User]]:
    """(follow id, followed account), newest follows first; never an account that blocks the
    viewer or that the viewer blocks."""
    query = (
        select(Follow.id, User)
        .join(User, User.id == Follow.followee_id)
        .where(Follow.follower_id == user_id, ~blocked_between(viewer_id, User.id))
    )
    if before is not None:
        query = query.where(Follow.id < before)
    rows = await session.execute(query.order_by(Follow.id.desc()).limit(limit))
    return [(row[0], row[1]) for row in rows]


async def requests_page(
    session: AsyncSession, target_id: int, before: int | None, limit: int
) -> list[tuple[int, User]]:
    """(request id, requester), newest requests first."""
    query = (
        select(FollowRequest.id, User)
        .join(User, User.id == FollowRequest.requester_id)
        .where(FollowRequest.target_id == target_id)
    )
    if before is not None:
        query = query.where(FollowRequest.id < before)
    rows = await session.execute(query.order_by(FollowRequest.id.desc()).limit(limit))
    return [(row[0], row[1]) for row in rows]


_FOLLOWER_BATCH = (
    select(Follow.id, Follow.follower_id)
    .where(Follow.followee_id == bindparam("user"), Follow.id > bindparam("after"))
    .order_by(Follow.id)
    .limit(bindparam("limit"))
)


async def follower_batch(
    db: Database, user_id: int, after_follow_id: int, limit: int
) -> list[tuple[int, int]]:
    """(follow id, follower id) of the account's next followers in follow order: a keyset walk
    of the (followee, id) index, for fan-out in batches (on the quick path)."""
    rows = await db.fetch(
        _FOLLOWER_BATCH, {"user": user_id, "after": after_follow_id, "limit": limit}
    )
    return [(row[0], row[1]) for row in rows]


async def mark_feed_pull(session: AsyncSession, user_id: int) -> None:
    await session.execute(update(User).where(User.id == user_id).values(feed_pull=True))
