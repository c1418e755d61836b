"""The home feed: reading it (candidates, visibility, ranking, cursors), rebuilding a feed that
is missing, and the fan-out that keeps feeds filled.

Candidates come from three places, merged newest first:
- the user's materialised feed (fan-out on write put followed accounts' posts there), for ids at
  or above its horizon;
- below the horizon (the feed was trimmed to its cap, or never held older posts), the posts
  table itself, so scrolling never stops at the cache's edge;
- the recent posts of followed accounts too large to fan out (the hybrid merge).
Whatever they say, each candidate is checked against the posts, follows and blocks tables as
they are now (feed/repository.feed_posts), so an unfollow, a block or a deletion counts from the
very next read, before any job has cleaned the feed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.exc import OperationalError

from glimpse.backends.feed import FeedStoreUnavailable, FeedWindow
from glimpse.db.base import utcnow
from glimpse.feed import repository
from glimpse.feed.cursors import WINDOW, FeedPosition, Order
from glimpse.feed.memo import Version
from glimpse.feed.ranking import Candidate, rank_candidates
from glimpse.feed.repository import COMMENT_COUNT, LIKE_COUNT, Counts, PostValues
from glimpse.ids import id_timestamp_ms
from glimpse.ops.metrics import FEED_CACHE, FEED_READS, FEED_REBUILD_SECONDS, never_failing
from glimpse.posts.views import PostRow

if TYPE_CHECKING:
    from glimpse.container import Container

log = logging.getLogger("glimpse.feed")

# A page that finds most candidates gone (unfollowed, deleted) looks at most this many windows
# before answering with what it has and a cursor to go on from.
MAX_WINDOWS_PER_PAGE = 8
# The viewer's affinity to an author counts their likes and comments of this long.
AFFINITY_DAYS = 30


@dataclass
class FeedPage:
    posts: list[PostRow]
    next_position: FeedPosition | None
    # Of a first page: the like and comment counts of every post it was chosen from (a ranked
    # window is ordered by them), or None where its order could change with time alone (a post
    # stamped in the future). What a kept first page looks at again before it is served past
    # its time (feed/kept_pages.py): the same counts, the same page.
    counts: dict[int, Counts] | None = None


async def read_feed(
    container: Container, viewer_id: int, position: FeedPosition | None, order: Order, limit: int
) -> FeedPage:
    """One page of the viewer's home feed, from `position` (None: the top)."""
    with never_failing():
        FEED_READS.labels(order).inc()
    reader = _Reader(container, viewer_id)
    if order == "latest":
        page = await reader.latest(position or FeedPosition(order="latest"), limit)
    else:
        page = await reader.ranked(position or FeedPosition(order="ranked"), limit)
    if position is None:
        page.counts = reader.counts_seen()
    return page


async def rebuild_feed(container: Container, user_id: int) -> None:
    """Build a missing feed from the database: the newest `feed_cap` posts of the accounts the
    user follows (but those merged at read time) and their own."""
    store, cap = container.feed_store, container.settings.feed_cap
    started = now = time.time()
    # Live before reading: a post that becomes ready from here on is pushed to it, one that
    # became ready before is in what we read.
    await store.begin_rebuild(user_id, now)
    # Read on a replica only once it holds all that was committed before the feed went live.
    position = await container.db.primary_position()
    entries = await repository.followed_posts(
        container.db, user_id, None, cap, include_pulled=False, at_least=position
    )
    horizon = entries[-1][0] if len(entries) >= cap else 0
    await store.finish_rebuild(user_id, entries, horizon, now)
    with never_failing():
        FEED_REBUILD_SECONDS.observe(time.time() - started)


async def pulled_accounts(
    container: Container, viewer_id: int, version: Version | None = None
) -> list[int]:
    """The large accounts the viewer follows, merged into the feed at read time (memoised for
    feed_viewer_memo_seconds: a new follow of one shows that much later). `version`: the
    database's version as the caller read it before this call; None: read here."""
    memo = container.viewer_memo
    # (Or for as long as nothing is committed: a follow, an account growing large, is one.)
    if version is None:
        version = container.db.version()
    cached = memo.get("pulled", viewer_id, version)
    if isinstance(cached, list):
        return cached
    pulled = await repository.followed_pull_accounts(container.db, viewer_id)
    memo.put("pulled", viewer_id, pulled, version)
    return pulled


class _Reader:
    def __init__(self, container: Container, viewer_id: int) -> None:
        self.container = container
        self.viewer_id = viewer_id
        self.store = container.feed_store
        self._touched = False
        self._seen: list[dict[int, PostValues]] = []

    async def latest(self, position: FeedPosition, limit: int) -> FeedPage:
        served: list[PostValues] = []
        below, more = position.before, True
        for _ in range(MAX_WINDOWS_PER_PAGE):
            ids, floor, more = await self._candidates(below, limit + 1 - len(served))
            visible = await self._visible(ids)
            served.extend(visible[i] for i in ids if i in visible)
            below = floor if floor is not None else below
            if len(served) > limit or not more:
                break
        if len(served) > limit:
            return _page(served[:limit], replace(position, before=served[limit - 1][0]))
        if more and below is not None:  # looked long enough: go on from where we stopped
            return _page(served, replace(position, before=below))
        return _page(served, None)

    async def ranked(self, position: FeedPosition, limit: int) -> FeedPage:
        served: list[PostValues] = []
        pending = list(position.pending)
        floor, more = position.floor, position.more
        if pending:
            visible = await self._visible(pending)
            kept = [visible[i] for i in pending if i in visible]
            served, pending = kept[:limit], [p[0] for p in kept[limit:]]
        affinity: dict[int, int] | None = None
        windows = 0
        while len(served) < limit and more and windows < MAX_WINDOWS_PER_PAGE:
            windows += 1
            ids, new_floor, more = await self._candidates(floor, WINDOW)
            floor = new_floor if new_floor is not None else floor
            visible = await self._visible(ids)
            if not visible:
                continue
            if affinity is None:
                affinity = await self._affinity()
            ranked = self._rank(list(visible.values()), affinity)
            take = limit - len(served)
            served.extend(ranked[:take])
            pending = [p[0] for p in ranked[take:]]
        if not pending and not more:
            return _page(served, None)
        return _page(
            served, FeedPosition(order="ranked", pending=tuple(pending), floor=floor, more=more)
        )

    async def _candidates(self, below: int | None, n: int) -> tuple[list[int], int | None, bool]:
        """The next `n` candidate ids below `below`, newest first; the lowest id looked at (the
        next call's `below`); and whether any may be left below it."""
        window = await self._window(below, n)
        if window is None:
            # Still none (dropped again at once, or not rebuilt): the database alone answers.
            horizon, cached = _NO_BOUND, []
        else:
            horizon, cached = window.horizon_id, window.entries
            await self._touch(window.read_at)
        sources = [[p for p, _ in cached]]
        exhausted = [len(cached) < n]
        db = self.container.db
        if len(cached) < n and horizon > 0:
            older = await repository.followed_posts(
                db, self.viewer_id, min(below or _NO_BOUND, horizon), n
            )
            sources.append([p for p, _ in older])
            exhausted.append(len(older) < n)
        pulled = await self._pulled_accounts()
        if pulled:
            large = await repository.posts_of_authors(db, pulled, below, n, replica=True)
            sources.append([p for p, _ in large])
            exhausted.append(len(large) < n)
        merged = sorted({p for source in sources for p in source}, reverse=True)
        more = not all(exhausted)
        if len(merged) > n:
            merged, more = merged[:n], True
        return merged, (merged[-1] if merged else None), more

    async def _window(self, below: int | None, n: int) -> FeedWindow | None:
        """The cached window, rebuilding a missing feed first; None when the cache cannot
        answer, so that the database alone does."""
        try:
            window = await self.store.window(self.viewer_id, below, n)
        except FeedStoreUnavailable:
            _count_cache("fallback")
            return None  # a cache server that is down (it already logged why)
        if window is not None:
            _count_cache("hit")
            return window
        try:
            await rebuild_feed(self.container, self.viewer_id)
        except (OperationalError, FeedStoreUnavailable):
            # The cache cannot be written (a full or read-only disk, a busy database, a cache
            # server gone meanwhile): the read still can be answered, from the database alone.
            log.warning("could not rebuild the feed of %d; reading it from posts", self.viewer_id)
            _count_cache("fallback")
            return None
        with contextlib.suppress(FeedStoreUnavailable):
            window = await self.store.window(self.viewer_id, below, n)
        _count_cache("miss" if window is not None else "fallback")
        return window

    def _rank(self, posts: list[PostValues], affinity: dict[int, int]) -> list[PostValues]:
        """The posts in feed order (rank_candidates).

        A ranking depends on the clock only through the posts' ages, which all grow alike: the
        same posts with the same counts and the same affinity rank the same a little later (as
        long as none was stamped in the future). So the order of a viewer's last window is
        remembered (viewer_memo, a hash of what it depends on and the order as positions) and
        reused while they are unchanged; a like, a comment, a new or vanished post changes the
        hash and the window is ranked afresh."""
        now_ms = int(time.time() * 1000)
        key = hash(
            (
                tuple((p[0], p[1], p[LIKE_COUNT], p[COMMENT_COUNT]) for p in posts),
                frozenset(affinity.items()),
            )
        )
        memo = self.container.viewer_memo
        hit = memo.get("ranking", self.viewer_id)
        if isinstance(hit, tuple) and hit[0] == key and len(hit[1]) == len(posts):
            # Kept while in use (it is never stale, so the memo's TTL only bounds how long an
            # idle viewer's order stays). Positions into these very posts: even a colliding
            # hash could only reorder them.
            memo.put("ranking", self.viewer_id, hit)
            return [posts[i] for i in hit[1]]
        position = {p[0]: i for i, p in enumerate(posts)}
        ranked = rank_candidates(
            [_candidate(post) for post in posts], now_ms=now_ms, affinity=affinity
        )
        order = [position[c.post_id] for c in ranked]
        if len(posts) <= _MEMO_MAX_POSTS and id_timestamp_ms(max(position)) <= now_ms:
            memo.put("ranking", self.viewer_id, (key, bytes(order)))
        return [posts[i] for i in order]

    async def _visible(self, ids: Sequence[int]) -> dict[int, PostValues]:
        visible = await repository.feed_posts(self.container.db, self.viewer_id, ids)
        self._seen.append(visible)
        return visible

    def counts_seen(self) -> dict[int, Counts] | None:
        """The counts of every post this read found visible (FeedPage.counts); None if one is
        stamped in the future, past which a ranking changes with time (ranking._log_score)."""
        counts = {
            post_id: (post[LIKE_COUNT], post[COMMENT_COUNT])
            for visible in self._seen
            for post_id, post in visible.items()
        }
        if counts and id_timestamp_ms(max(counts)) > int(time.time() * 1000):
            return None
        return counts

    async def _pulled_accounts(self) -> list[int]:
        return await pulled_accounts(self.container, self.viewer_id)

    async def _affinity(self) -> dict[int, int]:
        memo = self.container.viewer_memo
        cached = memo.get("affinity", self.viewer_id)
        if isinstance(cached, dict):
            return cached
        since = utcnow() - timedelta(days=AFFINITY_DAYS)
        affinity = await repository.interactions_by_author(self.container.db, self.viewer_id, since)
        memo.put("affinity", self.viewer_id, affinity)
        return affinity

    async def _touch(self, read_at: float) -> None:
        now = time.time()
        if not self._touched and now - read_at > self.store.TOUCH_SECONDS:
            self._touched = True
            # Best effort: a read is not refused because the mark of activity cannot be written
            # (it is tried again on the next read).
            with contextlib.suppress(OperationalError, FeedStoreUnavailable):
                await self.store.touch(self.viewer_id, now)


_NO_BOUND = 2**63 - 1
# A remembered order is kept as one byte per position (a window is WINDOW posts).
_MEMO_MAX_POSTS = 256


def _count_cache(result: str) -> None:
    with never_failing():
        FEED_CACHE.labels(result).inc()


def _page(served: list[PostValues], next_position: FeedPosition | None) -> FeedPage:
    return FeedPage([PostRow.from_row(values) for values in served], next_position)


def _candidate(post: PostValues) -> Candidate:
    return Candidate(
        post_id=post[0],
        author_id=post[1],
        created_ms=id_timestamp_ms(post[0]),
        # (Counters never go below zero; if one ever did, the page must still rank.)
        like_count=max(0, post[LIKE_COUNT]),
        comment_count=max(0, post[COMMENT_COUNT]),
    )
