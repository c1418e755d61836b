"""Erasing an account (`DELETE /api/v1/me`): what happens at once, and the job that does the rest.

At once, in one transaction: the account is disabled, every token it holds revoked (API
clients and web sessions alike), its posts and stories failed (so no follower can open one by id
until the job deletes it), its username moved aside to a name no request can ask for (so
its profile is a 404 at once and the name is held, not freed), and the erasure job queued (the
jobs table is the outbox). The job then deletes everything in batches, each batch its own
transaction; it is at-least-once like every job, so each step deletes only what is still there
and a run killed anywhere is finished by the next one. Its order matters:

1. posts and stories first (their stored files purged by a job queued in the same transaction
   as the rows, so no file outlives its row and none is lost before it): nothing of the account
   can be fanned out any more once they are gone;
2. then the account's posts leave the cached feeds of its followers, while the follows that
   say who they are still exist (a run killed later redoes this step harmlessly);
3. then its likes, comments, story views and follows, each taken off the counters of the
   posts and accounts they counted on, by the rows really deleted (counters stay exact);
4. last the user row itself, with its tokens; the erasure row stays to hold the username.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.backends.queue.outbox import enqueue
from glimpse.engagement import repository as engagement_repository
from glimpse.errors import Unauthenticated
from glimpse.graph import repository as graph_repository
from glimpse.posts import service as posts
from glimpse.privacy import repository
from glimpse.privacy.models import AccountErasure

if TYPE_CHECKING:
    from glimpse.accounts.models import User
    from glimpse.container import Container

log = logging.getLogger("glimpse.privacy")

ERASE_ACCOUNT_JOB = "erase_account"


def erased_username(user_id: int) -> str:
    """What an account being erased is renamed to: `~` is outside every username's alphabet,
    so no sign-up can take it and no look-up by name finds it (accounts.service.find_user)."""
    return f"~{user_id}"


class ErasureUnfinished(RuntimeError):
    """Something of the account appeared while the job ran (an upload that was already in
    flight): the job fails this run and is retried, and the retry deletes it too."""


async def erase_with_password(
    container: Container, user: User, password: str, address: str
) -> None:
    """The API's `DELETE /api/v1/me` and the web's account page alike: a wrong password is
    answered as a wrong sign-in is, and counts against the same guard (a stolen token or
    session cannot be used to guess the password at leisure)."""
    async with container.sign_ins.attempt(user.username, address) as attempt:
        if not await container.passwords.verify(user.password_hash, password):
            attempt.failed()
            raise Unauthenticated("Wrong username or password.", code="invalid_credentials")
        attempt.succeeded()
    await request_erasure(container, user.id)


async def request_erasure(container: Container, user_id: int) -> bool:
    """Disable the account at once and queue the job that erases it. False when its erasure
    was already asked for (the answer is the same: it is under way)."""
    now = container.now()
    settings = container.settings
    async with container.db.write() as session:
        user = await repository.lock_user(session, user_id)
        if user is None or await repository.get_erasure(session, user_id) is not None:
            return False
        session.add(
            AccountErasure(
                user_id=user_id,
                username=user.username,
                requested_at=now,
                hold_until=now + timedelta(days=settings.erased_username_hold_days),
            )
        )
        user.username = erased_username(user_id)
        user.display_name, user.bio = "", ""
        user.disabled_at = now
        await repository.revoke_tokens(session, user_id, now)
        await repository.hide_posts(session, user_id)
        enqueue(
            session,
            container.ids,
            ERASE_ACCOUNT_JOB,
            {"user_id": user_id},
            max_attempts=settings.job_max_attempts,
            owner=user_id,
        )
    log.info("account %d is being erased", user_id)
    return True


async def erase_account(container: Container, user_id: int) -> None:
    """Delete everything of the account, batch by batch (module docstring: why in this order).
    Safe to run again at any point: each step deletes only what is left."""
    async with container.db.read() as session:
        erasure = await repository.get_erasure(session, user_id)
    if erasure is None or erasure.finished_at is not None:
        return  # never asked for, or done already
    await _delete_posts(container, user_id)
    await _delete_highlights(container, user_id)
    await _remove_from_feeds(container, user_id)
    await _delete_engagement(container, user_id)
    await _delete_follows(container, user_id)
    await _delete_exports(container, user_id)
    async with container.db.write() as session:
        if await repository.has_posts(session, user_id):
            raise ErasureUnfinished(f"account {user_id} gained a post while being erased")
        await repository.delete_requests_and_blocks(session, user_id)
        await repository.delete_account_row(session, user_id)
        erasure = await repository.get_erasure(session, user_id)
        if erasure is not None:
            erasure.finished_at = container.now()
    log.info("account %d is erased", user_id)


async def _delete_posts(container: Container, user_id: int) -> None:
    batch_size = container.settings.erasure_batch_size
    while True:
        async with container.db.write() as session:
            post_ids = await repository.post_batch(session, user_id, batch_size)
            keys = await repository.delete_posts(session, post_ids)
            # At once, not after the grace period of a deleted post: the owner asked for their
            # files to be gone. The purge still keeps any file another post uses.
            posts.schedule_purge(session, container.ids, container.settings, keys, delay_seconds=0)
        await container.post_summaries.forget(post_ids)
        if len(post_ids) < batch_size:
            return


async def _delete_highlights(container: Container, user_id: int) -> None:
    async with container.db.write() as session:
        await repository.delete_highlights(session, user_id)


async def _remove_from_feeds(container: Container, user_id: int) -> None:
    """The account's own feed goes, and its posts leave its followers' feeds. (Feed reads
    already skip them: their rows are gone. This is so that no cache keeps even their ids.)"""
    batch_size = container.settings.erasure_batch_size
    store = container.feed_store
    await store.drop(user_id)
    after = 0
    while True:
        batch = await graph_repository.follower_batch(container.db, user_id, after, batch_size)
        await store.remove_author([follower_id for _, follower_id in batch], user_id)
        if len(batch) < batch_size:
            return
        after = batch[-1][0]


async def _in_batches(
    container: Container, step: Callable[[AsyncSession, int], Awaitable[int]]
) -> None:
    """`step(session, batch_size)` in write transactions of its own until one does fewer than a
    batch: short transactions, so the erasure never holds the write lock for long."""
    batch_size = container.settings.erasure_batch_size
    while True:
        async with container.db.write() as session:
            done = await step(session, batch_size)
        if done < batch_size:
            return


async def _delete_engagement(container: Container, user_id: int) -> None:
    async def likes(session: AsyncSession, n: int) -> int:  # each off its post's like_count
        liked = await repository.liked_post_batch(session, user_id, n)
        for post_id in liked:
            await engagement_repository.remove_like(session, post_id, user_id)
        return len(liked)

    await _in_batches(container, likes)
    await _in_batches(
        container, lambda session, n: repository.delete_comment_batch(session, user_id, n)
    )
    await _in_batches(
        container, lambda session, n: repository.delete_view_batch(session, user_id, n)
    )


async def _delete_follows(container: Container, user_id: int) -> None:
    """Both ways, each follow off the other account's follower or following count."""

    async def followees(session: AsyncSession, n: int) -> int:
        found = await repository.followee_batch(session, user_id, n)
        for followee_id in found:
            await graph_repository.remove_follow(session, user_id, followee_id)
        return len(found)

    async def followers(session: AsyncSession, n: int) -> int:
        found = await repository.follower_batch(session, user_id, n)
        for follower_id in found:
            await graph_repository.remove_follow(session, follower_id, user_id)
        return len(found)

    await _in_batches(container, followees)
    await _in_batches(container, followers)


async def _delete_exports(container: Container, user_id: int) -> None:
    """Its data exports, files first: a row without its file is only a failed download, a
    file without its row would be kept for good."""
    async with container.db.read() as session:
        exports = await repository.exports_of(session, user_id)
    keys = [e.key for e in exports if e.key]
    if keys:
        await container.storage.delete_many(keys)
    async with container.db.write() as session:
        await repository.delete_exports(session, [e.id for e in exports])
