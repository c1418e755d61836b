"""A viewer's first page of the home feed, kept and served again while nothing on it changed.

Most feed reads are the first page again: someone opening the app, or pulling to refresh.
Building one runs five statements and ranks a window (most of a read's cost: bench/
bench_feed.py); serving it again as it was built costs two cheap looks at what it depends on:
- the feed marks (migration 0013) of the viewer, of each author on the page, and of the large
  accounts the viewer follows (merged in at read time). Triggers move them on, in the
  transaction that makes the change, at every follow or block made or ended, every post that
  becomes ready or stops being so (a deletion), the viewer's own likes and comments, and renames
  and privacy changes: so a revocation counts from the very next read, in every process;
- the newest entry of the viewer's materialised feed and the number of its entries (fan-out
  adds posts of accounts that are not on the page yet, newer or older than those on it).
While both are as they were, the page is served as built, for at most feed_kept_page_seconds:
others' likes and comments (the counts) show within that. (Each page for a random share of it,
between half and all: pages kept in the same second, say after a restart, do not all expire in
the same second again, and a burst of builds queue behind each other, at every period.)

The marks are read before the page is built. Read after, a change committed in between would
be in the marks kept but not in the page, and never noticed. An author whose mark was not read
before (not on the page last time) is kept at mark 0: marks only grow, so the page is served
again only if it is still 0, that is, if nothing about that account has ever changed; if it has,
the next read builds the page again, having read its mark first.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from glimpse.backends.feed import FeedStoreUnavailable
from glimpse.feed import repository
from glimpse.feed.cursors import Order
from glimpse.ops.metrics import FEED_KEPT_PAGES, never_failing

if TYPE_CHECKING:
    from glimpse.container import Container

# What a kept page costs beyond its bytes (the entry, its key), roughly; and each of its marks
# (a dict entry and two int objects: ~110 bytes measured by sys.getsizeof, not 16: a viewer
# following a thousand large accounts keeps a thousand marks on each of up to 200 pages).
_ENTRY_OVERHEAD = 400
_MARK_BYTES = 112


# A materialised feed's newest entry (0: none) and how many entries it holds (FeedWindow.size).
FeedState = tuple[int, int]


@dataclass(frozen=True)
class Kept:
    """A first page as built, under the marks and the state of the feed (FeedState) read before
    it was built (None: there was no feed to watch), from `kept_at` until `until` (the
    container's clock)."""

    body: bytes
    marks: Mapping[int, int]
    feed: FeedState | None
    kept_at: float
    until: float
    # The large accounts merged in when it was built: a page built before the viewer's memo
    # knew of a newly followed one (or of an account that just became one) lacks its posts.
    pulled: frozenset[int] = frozenset()

    def serves(
        self,
        marks: Mapping[int, int],
        feed: FeedState | None,
        now: float,
        pulled: Collection[int] = frozenset(),
    ) -> bool:
        """Whether this page may be served again, given the marks, feed state and large
        accounts followed read now."""
        return (
            self.feed is not None
            and feed == self.feed
            and self.kept_at <= now < self.until
            and frozenset(pulled) == self.pulled
            and all(marks.get(account, 0) == mark for account, mark in self.marks.items())
        )


def to_keep(
    body: bytes,
    authors: Collection[int],
    watched: Collection[int],
    marks: Mapping[int, int],
    feed: FeedState | None,
    now: float,
    seconds: float,
    pulled: Collection[int] = frozenset(),
) -> Kept:
    """A page just built from `authors`' posts, kept for `seconds` under the marks of
    `watched` read before it was built (an account without a row is at 0), and its authors not
    among them at 0 (`marks` may hold more: only these are kept)."""
    marks_kept = {a: marks.get(a, 0) for a in {*watched, *authors}}
    return Kept(body, marks_kept, feed, now, now + seconds, frozenset(pulled))


class KeptPages:
    """This process's kept first pages, the least recently used dropped past `max_bytes`."""

    def __init__(self, seconds: float, max_bytes: int) -> None:
        self.seconds = seconds
        self._max_bytes = max_bytes
        self._bytes = 0
        self._pages: OrderedDict[tuple[int, str, int], Kept] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.seconds > 0 and self._max_bytes > 0

    def get(self, key: tuple[int, str, int]) -> Kept | None:
        return self._pages.get(key)

    def put(self, key: tuple[int, str, int], kept: Kept) -> None:
        self.drop(key)
        size = _size(kept)
        if size > self._max_bytes:
            return
        self._pages[key] = kept
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, oldest = self._pages.popitem(last=False)
            self._bytes -= _size(oldest)

    def drop(self, key: tuple[int, str, int]) -> None:
        old = self._pages.pop(key, None)
        if old is not None:
            self._bytes -= _size(old)

    @property
    def size_bytes(self) -> int:
        return self._bytes


def _size(kept: Kept) -> int:
    return len(kept.body) + _ENTRY_OVERHEAD + _MARK_BYTES * (len(kept.marks) + len(kept.pulled))


# Builds the page: its JSON bytes, and the ids of the accounts whose posts are on it.
Build = Callable[[], Awaitable[tuple[bytes, Collection[int]]]]


async def first_page(
    container: Container,
    viewer_id: int,
    order: Order,
    limit: int,
    pulled: Collection[int],
    build: Build,
) -> bytes:
    """The viewer's first page: as kept, if nothing it depends on changed; else built (and
    kept). `pulled`: the large accounts the viewer follows, merged in at read time."""
    pages = container.kept_pages
    key = (viewer_id, order, limit)
    kept = pages.get(key)
    watched = {viewer_id, *pulled, *(kept.marks if kept is not None else ())}
    # Both read before the page is built (see above).
    feed = await _feed_state(container, viewer_id)
    marks = await repository.feed_marks(container.db, watched)
    now = container.clock()
    if kept is not None and kept.serves(marks, feed, now, pulled):
        with never_failing():
            FEED_KEPT_PAGES.labels("kept").inc()
        pages.put(key, kept)  # (most recently used)
        return kept.body
    if container.db.replicas is not None:
        # Read in turn, replicas may stand at different points: the marks kept are the lowest
        # any holds, so that no statement of the build reads an older state than they say.
        lowest = await repository.lowest_feed_marks(container.db, watched)
        if lowest is None:
            feed = None  # (kept only to say whom to watch: never served)
        else:
            marks = lowest
    body, authors = await build()
    with never_failing():
        FEED_KEPT_PAGES.labels("built").inc()
    # (With no feed to watch, missing until this build or its store down, it is never served:
    # it only says whom to watch next time.)
    seconds = pages.seconds * random.uniform(0.5, 1.0)
    # Watched from now on: the viewer, the large accounts and the authors on this page; not
    # every author an earlier page showed (marks read for them are kept only if still shown).
    kept_now = to_keep(body, authors, {viewer_id, *pulled}, marks, feed, now, seconds, pulled)
    pages.put(key, kept_now)
    return body


async def _feed_state(container: Container, viewer_id: int) -> FeedState | None:
    """The viewer's materialised feed's newest entry and size; None when there is no feed to
    watch (missing, or the store does not answer)."""
    try:
        window = await container.feed_store.window(viewer_id, None, 1)
    except FeedStoreUnavailable:
        return None
    if window is None:
        return None
    return (window.entries[0][0] if window.entries else 0), window.size
