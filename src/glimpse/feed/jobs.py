"""Queue handlers of the feed pipeline. Payloads are ids; each handler reloads what it needs,
treats a missing row as done, and is safe to run twice or out of order (the feed store's
operations are idempotent, and each handler acts on the relation as it is when it runs)."""

from __future__ import annotations

import logging
import time

from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import User
from glimpse.container import Container
from glimpse.feed import repository
from glimpse.feed.names import (
    EXPIRE_FEEDS_JOB,
    FAN_OUT_JOB,
    MERGE_AUTHOR_JOB,
    REMOVE_AUTHOR_JOB,
    UNFAN_OUT_JOB,
)
from glimpse.graph import repository as graph_repository
from glimpse.jobs import Payload, job
from glimpse.ops.metrics import (
    FANOUT_BATCH_SECONDS,
    FANOUT_BATCHES,
    FANOUT_FEEDS,
    never_failing,
)
from glimpse.posts import repository as posts_repository
from glimpse.posts.models import PostKind, PostStatus

log = logging.getLogger("glimpse.feed")

# Followers read and pushed per transaction: a few tens of milliseconds of write lock each, so a
# fan-out never holds the database for long, and few enough commits (each an fsync) to be quick.
FAN_OUT_BATCH = 5000


@job(FAN_OUT_JOB)
async def fan_out_post(container: Container, payload: Payload) -> None:
    """Push a post that just became ready into its author's feed and its followers' feeds (those
    that exist: an inactive follower's expired feed is rebuilt when they come back). An account
    past the fan-out threshold is not pushed: its posts are merged in when feeds are read."""
    post_id = int(payload["post_id"])
    async with container.db.write() as session:
        post = await posts_repository.get_post(session, post_id)
        if post is None or post.status != PostStatus.READY or post.kind != PostKind.POST:
            return  # deleted meanwhile (and stories are never in feeds)
        author = await session.get(User, post.author_id)
        if author is None:
            return
        if (
            not author.feed_pull
            and author.follower_count > container.settings.feed_fanout_max_followers
        ):
            # From now on, for good: see User.feed_pull.
            await graph_repository.mark_feed_pull(session, author.id)
            author.feed_pull = True
        author_id, pulled = author.id, author.feed_pull
    store = container.feed_store
    started, after, feeds = time.perf_counter(), 0, 0
    # The author's own feed goes with the first batch of followers: one transaction fewer, and
    # each commit (an fsync) costs as much as thousands of rows.
    own = [author_id]
    while not pulled:
        batch = await graph_repository.follower_batch(container.db, author_id, after, FAN_OUT_BATCH)
        if not batch:
            break
        pushed = time.perf_counter()
        feeds += await store.push(post_id, author_id, [*own, *(follower for _, follower in batch)])
        with never_failing():
            FANOUT_BATCHES.inc()
            FANOUT_BATCH_SECONDS.observe(time.perf_counter() - pushed)
        own = []
        after = batch[-1][0]
    if own:  # merged at read time, or no followers: the author's feed alone
        feeds += await store.push(post_id, author_id, own)
    with never_failing():
        FANOUT_FEEDS.inc(feeds)
    log.debug(
        "post %d reached %d feeds in %.1f ms",
        post_id,
        feeds,
        (time.perf_counter() - started) * 1000,
    )


@job(UNFAN_OUT_JOB)
async def remove_post_from_feeds(container: Container, payload: Payload) -> None:
    """Take a deleted post out of the feeds fan-out put it in. (Reads already skip it: the post
    row is gone.)"""
    post_id, author_id = int(payload["post_id"]), int(payload["author_id"])
    store = container.feed_store
    await store.remove_post(post_id, [author_id])
    after = 0
    while True:
        batch = await graph_repository.follower_batch(container.db, author_id, after, FAN_OUT_BATCH)
        if not batch:
            break
        await store.remove_post(post_id, [follower for _, follower in batch])
        after = batch[-1][0]


async def _merged_at_read_time(container: Container, session: AsyncSession, author: User) -> bool:
    """Whether the author's posts are merged into feeds when read rather than pushed; an
    account past the threshold becomes one here, for good (see User.feed_pull)."""
    if (
        not author.feed_pull
        and author.follower_count > container.settings.feed_fanout_max_followers
    ):
        await graph_repository.mark_feed_pull(session, author.id)
        author.feed_pull = True
    return author.feed_pull


async def _follows(container: Container, user_id: int, author_id: int) -> bool:
    async with container.db.read() as session:
        return (await graph_repository.relation(session, user_id, author_id)).follows


@job(MERGE_AUTHOR_JOB)
async def merge_author_into_feed(container: Container, payload: Payload) -> None:
    """A new follow (or an accepted request): the account's recent posts join the follower's
    feed. Nothing to do if the follow ended meanwhile, or the account is merged at read time."""
    user_id, author_id = int(payload["user_id"]), int(payload["author_id"])
    if not await _follows(container, user_id, author_id):
        return
    async with container.db.write() as session:
        author = await session.get(User, author_id)
        if author is None or await _merged_at_read_time(container, session, author):
            return
    cap = container.settings.feed_cap
    entries = await repository.posts_of_authors(container.db, [author_id], None, cap + 1)
    # An account with more posts than a feed keeps: only its newest `cap` are merged, and the
    # feed is complete only above the oldest of them (the rest is read from the database).
    complete_above = entries[cap - 1][0] if len(entries) > cap else 0
    await container.feed_store.merge(user_id, entries[:cap], complete_above)


@job(REMOVE_AUTHOR_JOB)
async def remove_author_from_feed(container: Container, payload: Payload) -> None:
    """An unfollow or a block: the account's posts leave the feed. (Reads already skip them.)
    Nothing to do if the user follows the account again by now."""
    user_id, author_id = int(payload["user_id"]), int(payload["author_id"])
    if await _follows(container, user_id, author_id):
        return
    await container.feed_store.remove_author([user_id], author_id)


@job(EXPIRE_FEEDS_JOB, every=3600)
async def expire_inactive_feeds(container: Container, payload: Payload) -> None:
    """Drop the feeds of users who have not read theirs for `feed_idle_ttl_seconds`: fan-out
    stops spending writes on them, and their next read rebuilds the feed."""
    idle_since = time.time() - container.settings.feed_idle_ttl_seconds
    dropped = 0
    while (n := await container.feed_store.expire(idle_since, 500)) > 0:
        dropped += n
    if dropped:
        log.info("dropped %d inactive feeds", dropped)
