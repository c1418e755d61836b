"""The social graph's rules: follows, follow requests of private accounts, blocks, and the lists
of followers and following. Services never commit: the route owns the transaction.

Changes that reach feeds (a new follow merges the account's recent posts in; an unfollow or a
block takes them out) are jobs enqueued in the same transaction, so a crash cannot lose them;
until they run, the feed's read path already applies the new relation (feed/service.py).
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts import service as accounts
from glimpse.accounts.models import User
from glimpse.accounts.schemas import ProfileUpdate
from glimpse.backends.queue.outbox import enqueue
from glimpse.config import Settings
from glimpse.db.locks import lock_keys
from glimpse.errors import Forbidden, Invalid, NotFound
from glimpse.feed.names import MERGE_AUTHOR_JOB, REMOVE_AUTHOR_JOB
from glimpse.graph import repository
from glimpse.graph.visibility import Relation, can_see_content
from glimpse.ids import IdGenerator

FollowOutcome = Literal["following", "pending"]


def _no_such_user() -> NotFound:
    return NotFound("No such user.", code="user_not_found")


async def visible_user(
    session: AsyncSession, username: str, viewer_id: int, *, to_change: bool = False
) -> tuple[User, Relation]:
    """The account and how the viewer stands to it; NotFound when it does not exist or blocks
    the viewer (API.md: never confirm what the caller may not see). A viewer who blocks it
    still finds it: that is where they unblock it.

    `to_change`: the caller goes on to change the relation on what it read, so the two
    accounts' relation is locked first to the end of the transaction (PostgreSQL runs writers
    side by side: a follow that read "no block" while a block committed would outlive it)."""
    user = await accounts.find_user(session, username)
    if user is None:
        raise _no_such_user()
    if to_change:
        low, high = sorted((viewer_id, user.id))
        await lock_keys(session, [f"relation:{low}:{high}"])
    relation = await repository.relation(session, viewer_id, user.id)
    if relation.blocked_by:
        raise _no_such_user()
    return user, relation


async def visible_content_owner(session: AsyncSession, username: str, viewer_id: int) -> User:
    """The account whose content (grid, followers, following) the viewer asks for: 404 as
    visible_user, 403 for a private account the viewer does not follow."""
    user, relation = await visible_user(session, username, viewer_id)
    if not can_see_content(viewer_id, user.id, user.is_private, relation):
        if relation.blocks:
            raise Forbidden("You block this account.", code="blocked_account")
        raise Forbidden("This account is private.", code="private_account")
    return user


def follow_status(viewer_id: int, user_id: int, relation: Relation) -> str:
    if viewer_id == user_id:
        return "self"
    if relation.follows:
        return "following"
    return "pending" if relation.requested else "none"


def _feed_job(
    session: AsyncSession,
    ids: IdGenerator,
    settings: Settings,
    name: str,
    user_id: int,
    author_id: int,
) -> None:
    enqueue(
        session,
        ids,
        name,
        {"user_id": user_id, "author_id": author_id},
        max_attempts=settings.job_max_attempts,
        owner=user_id,
    )


async def _start_following(
    session: AsyncSession, ids: IdGenerator, settings: Settings, follower_id: int, followee_id: int
) -> None:
    if await repository.add_follow(session, ids.next_id(), follower_id, followee_id):
        _feed_job(session, ids, settings, MERGE_AUTHOR_JOB, follower_id, followee_id)


async def _stop_following(
    session: AsyncSession, ids: IdGenerator, settings: Settings, follower_id: int, followee_id: int
) -> None:
    await repository.remove_request(session, follower_id, followee_id)
    if await repository.remove_follow(session, follower_id, followee_id):
        _feed_job(session, ids, settings, REMOVE_AUTHOR_JOB, follower_id, followee_id)


async def follow(
    session: AsyncSession, ids: IdGenerator, settings: Settings, viewer_id: int, username: str
) -> FollowOutcome:
    """Follow a public account at once, or ask a private one (pending until its owner accepts).
    Idempotent: following again answers the state the first call reached."""
    user, relation = await visible_user(session, username, viewer_id, to_change=True)
    if user.id == viewer_id:
        raise Invalid("You cannot follow yourself.", code="cannot_follow_self")
    if relation.blocks:
        raise Forbidden("Unblock this account to follow it.", code="blocked_account")
    if relation.follows:
        return "following"
    if user.is_private:
        await repository.add_request(session, ids.next_id(), viewer_id, user.id)
        return "pending"
    await _start_following(session, ids, settings, viewer_id, user.id)
    return "following"


async def unfollow(
    session: AsyncSession, ids: IdGenerator, settings: Settings, viewer_id: int, username: str
) -> None:
    """Stop following (or withdraw a pending request). Idempotent."""
    user, _ = await visible_user(session, username, viewer_id)
    await _stop_following(session, ids, settings, viewer_id, user.id)


async def accept_request(
    session: AsyncSession, ids: IdGenerator, settings: Settings, owner_id: int, username: str
) -> None:
    """The owner of a private account lets this requester follow it. Accepting an
    already-accepted request is fine; accepting one nobody made is a 404."""
    requester, _ = await visible_user(session, username, owner_id, to_change=True)
    if await repository.remove_request(session, requester.id, owner_id):
        await _start_following(session, ids, settings, requester.id, owner_id)
        return
    reverse = await repository.relation(session, requester.id, owner_id)
    if not reverse.follows:
        raise NotFound("This user has not asked to follow you.", code="follow_request_not_found")


async def deny_request(session: AsyncSession, owner_id: int, username: str) -> None:
    """Refuse a follow request. Idempotent."""
    requester, _ = await visible_user(session, username, owner_id)
    await repository.remove_request(session, requester.id, owner_id)


async def change_profile(
    session: AsyncSession,
    ids: IdGenerator,
    settings: Settings,
    user_id: int,
    changes: ProfileUpdate,
) -> User:
    """Change the display name, bio or privacy of an account (PATCH /me and the web app's
    profile form). Going public lets in everyone who asked to follow."""
    user = await accounts.update_profile(session, user_id, changes)
    if changes.is_private is False:
        await accept_all_requests(session, ids, settings, user_id)
    return user


async def accept_all_requests(
    session: AsyncSession, ids: IdGenerator, settings: Settings, owner_id: int
) -> None:
    """An account that goes public lets everyone who asked follow it (they asked to)."""
    for requester_id in await repository.requesters_of(session, owner_id):
        # Only a request still there: a block between the two, committed since the list was
        # read, took it away (deleting a row another transaction deletes waits for it, then
        # finds nothing), and no follow may outlive a block.
        if await repository.remove_request(session, requester_id, owner_id):
            await _start_following(session, ids, settings, requester_id, owner_id)


async def block(
    session: AsyncSession, ids: IdGenerator, settings: Settings, viewer_id: int, username: str
) -> None:
    """Block an account: it no longer finds the viewer (404 for their profile, posts and
    stories), and follows and requests between the two end, both ways. Idempotent."""
    user, _ = await visible_user(session, username, viewer_id, to_change=True)
    if user.id == viewer_id:
        raise Invalid("You cannot block yourself.", code="cannot_block_self")
    await repository.add_block(session, viewer_id, user.id)
    await _stop_following(session, ids, settings, viewer_id, user.id)
    await _stop_following(session, ids, settings, user.id, viewer_id)


async def unblock(session: AsyncSession, viewer_id: int, username: str) -> None:
    """Lift a block (follows it ended stay ended). Idempotent."""
    user, _ = await visible_user(session, username, viewer_id)
    await repository.remove_block(session, viewer_id, user.id)


PageOfUsers = tuple[list[User], int | None]  # the users, and the key to continue below


async def list_followers(
    session: AsyncSession, username: str, viewer_id: int, before: int | None, limit: int
) -> PageOfUsers:
    owner = await visible_content_owner(session, username, viewer_id)
    rows = await repository.followers_page(session, owner.id, viewer_id, before, limit + 1)
    return _page(rows, limit)


async def list_following(
    session: AsyncSession, username: str, viewer_id: int, before: int | None, limit: int
) -> PageOfUsers:
    owner = await visible_content_owner(session, username, viewer_id)
    rows = await repository.following_page(session, owner.id, viewer_id, before, limit + 1)
    return _page(rows, limit)


async def list_follow_requests(
    session: AsyncSession, owner_id: int, before: int | None, limit: int
) -> PageOfUsers:
    rows = await repository.requests_page(session, owner_id, before, limit + 1)
    return _page(rows, limit)


def _page(rows: list[tuple[int, User]], limit: int) -> PageOfUsers:
    users = [user for _, user in rows[:limit]]
    return users, rows[limit - 1][0] if len(rows) > limit else None
