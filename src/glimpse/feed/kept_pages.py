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

When that time is up and nothing else has changed, one more look tells whether the page is
still what a build would give: the like and comment counts of every post it was chosen from
(a ranked window is ordered by them). If they are the same, so is the page (a ranking depends on
the clock only through ages that all grow alike: feed/ranking.py), and it is kept for another
period instead of being built again, for at most `renew_for` from its build (a private
account's media URLs on it are signed, and stay valid well past that: container.py). A page
showing a post stamped in the future (its rank changes with time alone) or photos still waiting
for their AVIF copies (feed/routes.py) is never renewed, only built again.

The marks are read before the page is built. Read after, a change committed in between would
be in the marks kept but not in the page, and never noticed. An author whose mark was not read
before (not on the page last time) is kept at mark 0: marks only grow, so the page is served
again only if it is still 0, that is, if nothing about that account has ever changed; if it has,
the next read builds the page again, having read its mark first.
"""

from __future__ import annotations

import random
from array import array
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeAlias

from glimpse.backends.feed import FeedStoreUnavailable
from glimpse.feed import repository
from glimpse.feed.cursors import WINDOW, Order
from glimpse.feed.repository import Counts
from glimpse.ops.metrics import FEED_KEPT_PAGES, never_failing

if TYPE_CHECKING:
    from glimpse.container import Container

# What a kept page costs beyond its bytes (the entry, its key), roughly; and each of its marks
# (a dict entry and two int objects: ~110 bytes measured by sys.getsizeof, not 16: a viewer
# following a thousand large accounts keeps a thousand marks on each of up to 200 pages).
_ENTRY_OVERHEAD = 400
_MARK_BYTES = 112
# And the counts (PackedCounts: three 8-byte numbers a post, and the array's own header).
_COUNT_BYTES = 24
_ARRAY_OVERHEAD = 80

# The counts of the posts a page was chosen from, packed: (id, likes, comments) after one another,
# by id. A ranked window is 64 posts: 1.5 KB where a dict of tuples takes 11 KB (sys.getsizeof),
# a third of the page's own bytes, and a third fewer pages under the same memory bound.
PackedCounts: TypeAlias = "array[int]"


def pack_counts(counts: Mapping[int, Counts]) -> PackedCounts:
    return array("q", [n for post in sorted(counts) for n in (post, *counts[post])])


# However little changes, a page is built again this long after it was, at the latest: the
# backstop for what no mark or count tells of, such as the affinity's window of days moving on.
RENEWED_FOR_AT_MOST = 300.0


def renewal_bound(private_media_url_ttl_seconds: float) -> float:
    """How long after its build a page may still be renewed: RENEWED_FOR_AT_MOST, or half the
    time a private account's media URLs are signed for if less. A URL signed now is valid for at
    least that whole time (media/urls.py), so every URL on a page served keeps half of it."""
    return min(RENEWED_FOR_AT_MOST, private_media_url_ttl_seconds / 2)


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
    # The counts of the posts it was chosen from (Built.counts); None: never renewed.
    counts: PackedCounts | None = None
    # The database's version (Database.version) read before the marks and feed state it was
    # last found to hold under: while the version is the same, nothing was committed since,
    # so it still holds (None: none read). And the one read before its counts were (at its
    # build, or at a renewal's look at them): while that is the same, so are they.
    version: tuple[int, int] | None = None
    counts_version: tuple[int, int] | None = None

    def holds(
        self,
        marks: Mapping[int, int],
        feed: FeedState | None,
        now: float,
        pulled: Collection[int] = frozenset(),
    ) -> bool:
        """Whether nothing this page depends on has changed, given the marks, feed state and
        large accounts followed read now: nothing but the counts, and its time."""
        return (
            self.feed is not None
            and feed == self.feed
            and self.kept_at <= now
            and frozenset(pulled) == self.pulled
            and all(marks.get(account, 0) == mark for account, mark in self.marks.items())
        )

    def renewable(self, now: float, renew_for: float) -> bool:
        """Whether, its time up, it may be kept for another period if its counts are the
        same: it was built less than `renew_for` ago, and knows its counts."""
        return self.counts is not None and now < self.kept_at + renew_for


def to_keep(
    body: bytes,
    authors: Collection[int],
    watched: Collection[int],
    marks: Mapping[int, int],
    feed: FeedState | None,
    now: float,
    seconds: float,
    pulled: Collection[int] = frozenset(),
    counts: Mapping[int, Counts] | None = None,
) -> Kept:
    """A page just built from `authors`' posts, kept for `seconds` under the marks of
    `watched` read before it was built (an account without a row is at 0), and its authors not
    among them at 0 (`marks` may hold more: only these are kept)."""
    marks_kept = {a: marks.get(a, 0) for a in {*watched, *authors}}
    packed = pack_counts(counts) if counts is not None else None
    return Kept(body, marks_kept, feed, now, now + seconds, frozenset(pulled), packed)


class KeptPages:
    """This process's kept first pages, the least recently used dropped past `max_bytes`."""

    def __init__(self, seconds: float, max_bytes: int, renew_for: float = 0.0) -> None:
        self.seconds = seconds
        self.renew_for = renew_for
        self._max_bytes = max_bytes
        self._bytes = 0
        self._pages: OrderedDict[tuple[int, str, int], Kept] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.seconds > 0 and self._max_bytes > 0

    def life(self) -> float:
        """How long a page built or renewed now is kept: a random share of `seconds`."""
        return self.seconds * random.uniform(0.5, 1.0)

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
    marks = _MARK_BYTES * (len(kept.marks) + len(kept.pulled))
    counts = 0 if kept.counts is None else _ARRAY_OVERHEAD + _COUNT_BYTES * len(kept.counts) // 3
    return len(kept.body) + _ENTRY_OVERHEAD + marks + counts


@dataclass(frozen=True)
class Built:
    """A first page just built: its JSON bytes, the ids of the accounts whose posts are on it,
    and the counts of the posts it was chosen from (feed.service.FeedPage.counts; None: it is
    never renewed, only built again)."""

    body: bytes
    authors: Collection[int]
    counts: Mapping[int, Counts] | None = None


Build = Callable[[], Awaitable[Built]]


async def first_page(
    container: Container,
    viewer_id: int,
    order: Order,
    limit: int,
    pulled: Collection[int],
    build: Build,
    version: tuple[int, int] | None = None,
) -> bytes:
    """The viewer's first page: as kept, if nothing it depends on changed; else built (and
    kept). `pulled`: the large accounts the viewer follows, merged in at read time. `version`:
    the database's version (Database.version) as the caller read it before anything this
    page depends on (None: read here)."""
    pages = container.kept_pages
    key = (viewer_id, order, limit)
    kept = pages.get(key)
    # Nothing committed since the page was last found to hold: it still does, and its counts
    # are the same, with no look at them (a quiet database: most of the time, for most of
    # the communities Glimpse serves). Only where the feed itself is in that database.
    if not container.feed_store.IN_DATABASE:
        version = None
    elif version is None:
        version = container.db.version()
    if kept is not None and version is not None and kept.version == version:
        now = container.clock()
        if kept.feed is not None and kept.kept_at <= now and frozenset(pulled) == kept.pulled:
            if now < kept.until:
                return _served(pages, key, kept, "kept")
            if kept.renewable(now, pages.renew_for) and kept.counts_version == version:
                return _served(pages, key, replace(kept, until=now + pages.life()), "renewed")
    watched = {viewer_id, *pulled, *(kept.marks if kept is not None else ())}
    # Both read before the page is built (see above); the version before both.
    feed = await _feed_state(container, viewer_id)
    marks = await repository.feed_marks(container.db, watched)
    now = container.clock()
    if kept is not None and kept.holds(marks, feed, now, pulled):
        if now < kept.until:
            return _served(pages, key, replace(kept, version=version), "kept")
        if kept.renewable(now, pages.renew_for) and await _counts_unchanged(container, kept):
            renewed = replace(
                kept, until=now + pages.life(), version=version, counts_version=version
            )
            return _served(pages, key, renewed, "renewed")
    if kept is not None and marks.get(viewer_id, 0) != kept.marks.get(viewer_id, 0):
        # The viewer liked, commented or followed since: the affinity the ranking weighs,
        # remembered for a few seconds (feed/memo.py), is read afresh for a page that may now
        # be kept, and renewed, for minutes.
        container.viewer_memo.forget("affinity", viewer_id)
    # The authors of the feed's newest entries, whose posts the page is most likely made of,
    # watched from this build on like the others (their marks read before it). An author not
    # watched is kept at mark 0, and any account that ever posted has moved its mark: the next
    # read would build the page again, only to learn its marks (every first build of a viewer,
    # and every build after a fan-out brought a new author, used to run twice).
    candidates = await _window_authors(container, viewer_id) - watched
    watched |= candidates
    if container.db.replicas is not None:
        # Read in turn, replicas may stand at different points: the marks kept are the lowest
        # any holds, so that no statement of the build reads an older state than they say.
        lowest = await repository.lowest_feed_marks(container.db, watched)
        if lowest is None:
            feed = None  # (kept only to say whom to watch: never served)
        else:
            marks = lowest
    elif candidates:
        marks = {**marks, **await repository.feed_marks(container.db, candidates)}
    built = await build()
    with never_failing():
        FEED_KEPT_PAGES.labels("built").inc()
    # (With no feed to watch, missing until this build or its store down, it is never served:
    # it only says whom to watch next time.)
    # Watched from now on: the viewer, the large accounts and the authors on this page; not
    # every author an earlier page showed (marks read for them are kept only if still shown).
    watched = {viewer_id, *pulled}
    kept = to_keep(
        built.body, built.authors, watched, marks, feed, now, pages.life(), pulled, built.counts
    )
    pages.put(key, replace(kept, version=version, counts_version=version))
    return built.body


async def _counts_unchanged(container: Container, kept: Kept) -> bool:
    """Whether the posts the page was chosen from still have the counts it was built with (a
    post gone, or never counted, is a change)."""
    if kept.counts is None:
        return False
    counted = await repository.post_counts(container.db, kept.counts[::3])
    return pack_counts(counted) == kept.counts


def _served(pages: KeptPages, key: tuple[int, str, int], kept: Kept, result: str) -> bytes:
    with never_failing():
        FEED_KEPT_PAGES.labels(result).inc()
    pages.put(key, kept)  # (most recently used)
    return kept.body


async def _window_authors(container: Container, viewer_id: int) -> set[int]:
    """The authors of the first window of the viewer's materialised feed (none if it is
    missing or its store does not answer)."""
    try:
        window = await container.feed_store.window(viewer_id, None, WINDOW)
    except FeedStoreUnavailable:
        return set()
    return {author for _, author in window.entries} if window is not None else set()


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
