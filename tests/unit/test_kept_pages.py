"""The kept first pages' pure parts: when a kept page may be served, and the memory bound."""

from __future__ import annotations

from glimpse.feed.kept_pages import Kept, KeptPages, to_keep


def test_a_page_is_served_only_while_its_marks_newest_entry_and_time_hold() -> None:
    kept = to_keep(
        b"page",
        authors={2, 3},
        watched={1, 2},
        marks={1: 4, 2: 9},
        feed=(50, 7),
        now=100,
        seconds=2,
    )
    assert kept.marks == {1: 4, 2: 9, 3: 0}  # the author not read is kept at 0
    now = {1: 4, 2: 9}

    def serves(marks: dict[int, int], feed: tuple[int, int], at: float) -> bool:
        return at < kept.until and kept.holds(marks, feed, at)

    assert serves(now, (50, 7), 100)
    assert serves(now, (50, 7), 101.9)
    assert not serves(now, (50, 7), 102)  # its time is up
    assert not serves(now, (50, 7), 99)  # a clock that went back
    assert not serves(now, (51, 8), 100)  # a newer entry in the feed
    assert not serves(now, (50, 8), 100)  # an older one pushed to it
    assert not serves({1: 5, 2: 9}, (50, 7), 100)  # the viewer's mark moved
    assert not serves({1: 4, 2: 9, 3: 1}, (50, 7), 100)  # an author's, never read, did
    assert not to_keep(b"p", {2}, {1}, {}, None, 100, 2).holds({}, None, 100)  # no feed


def test_the_least_recently_used_pages_go_past_the_memory_bound() -> None:
    one = Kept(b"x" * 1000, {1: 1}, (5, 1), 0, 2)
    size = len(one.body) + 400 + 112
    pages = KeptPages(seconds=2, max_bytes=3 * size)
    for viewer in range(3):
        pages.put((viewer, "ranked", 20), one)
    assert pages.size_bytes == 3 * size
    assert pages.get((0, "ranked", 20)) is one
    pages.put((0, "ranked", 20), one)  # used again: now the most recent
    pages.put((3, "ranked", 20), one)
    assert pages.get((1, "ranked", 20)) is None  # the least recently used went
    assert pages.get((0, "ranked", 20)) is one
    assert pages.size_bytes == 3 * size
    pages.put((4, "ranked", 20), Kept(b"x" * 10 * size, {}, (5, 1), 0, 2))  # larger than the bound
    assert pages.get((4, "ranked", 20)) is None and pages.size_bytes == 3 * size
    pages.drop((0, "ranked", 20))
    assert pages.size_bytes == 2 * size


def test_keeping_is_off_at_zero_seconds_or_bytes() -> None:
    assert KeptPages(2, 1).enabled
    assert not KeptPages(0, 1).enabled
    assert not KeptPages(2, 0).enabled


def test_the_memory_bound_counts_what_marks_really_take() -> None:
    """A viewer following many large accounts keeps all their marks with each of their pages
    (up to 100 sizes x 2 orders): the bound must count them as Python holds them."""
    import sys

    marks = {2**60 + n: 1000 + n for n in range(1000)}
    kept = Kept(b"x", marks, (5, 1), 0, 2)
    held = sys.getsizeof(marks) + sum(sys.getsizeof(a) + sys.getsizeof(m) for a, m in marks.items())
    pages = KeptPages(seconds=2, max_bytes=10**9)
    pages.put((1, "ranked", 20), kept)
    assert pages.size_bytes >= held


def test_a_page_larger_than_one_page_pushes_out_as_many_as_it_takes() -> None:
    small = Kept(b"x" * 1000, {1: 1}, (5, 1), 0, 2)
    size = len(small.body) + 400 + 112
    pages = KeptPages(seconds=2, max_bytes=3 * size)
    for viewer in range(3):
        pages.put((viewer, "ranked", 20), small)
    large = Kept(b"x" * (2 * size - 400), {}, (5, 1), 0, 2)  # two small pages' worth
    pages.put((3, "ranked", 20), large)
    assert pages.size_bytes == 3 * size  # within the bound, not one page past it
    assert pages.get((0, "ranked", 20)) is None and pages.get((1, "ranked", 20)) is None
    assert pages.get((2, "ranked", 20)) is small and pages.get((3, "ranked", 20)) is large


def test_a_page_whose_time_is_up_may_be_renewed_only_while_young_and_counted() -> None:
    from dataclasses import replace

    kept = to_keep(b"p", {2}, {1}, {1: 4}, (50, 7), now=100, seconds=2, counts={9: (1, 0)})
    assert kept.holds({1: 4}, (50, 7), 500) and kept.until <= 102  # (its time up at 102)
    assert not kept.holds({1: 5}, (50, 7), 101)  # a mark moved: never, whatever the time
    assert not kept.holds({1: 4}, (50, 7), 99)  # a clock that went back
    assert kept.renewable(now=102, renew_for=300)
    assert kept.renewable(now=399.9, renew_for=300)
    assert not kept.renewable(now=400, renew_for=300)  # counted from its build, not its renewal
    assert not replace(kept, until=500).renewable(now=400, renew_for=300)
    assert not replace(kept, counts=None).renewable(now=102, renew_for=300)


def test_renewals_end_while_signed_media_urls_on_the_page_have_half_their_time_left() -> None:
    from glimpse.feed.kept_pages import RENEWED_FOR_AT_MOST, renewal_bound

    assert renewal_bound(3600) == RENEWED_FOR_AT_MOST == 300
    assert renewal_bound(60) == 30  # (the shortest ttl the settings allow)


def test_the_memory_bound_counts_the_counts_kept_too() -> None:
    import sys

    counts = {2**58 + n: (1000 + n, 2000 + n) for n in range(64)}
    with_counts = to_keep(b"x", set(), set(), {}, (5, 1), 0, 2, counts=counts)
    assert with_counts.counts is not None
    without = Kept(b"x", {}, (5, 1), 0, 2)
    pages = KeptPages(seconds=2, max_bytes=10**9)
    pages.put((1, "ranked", 20), without)
    alone = pages.size_bytes
    pages.put((2, "ranked", 20), with_counts)
    assert pages.size_bytes - alone >= sys.getsizeof(with_counts.counts)


def test_counts_are_packed_by_post_and_compare_equal_only_when_all_are_the_same() -> None:
    from glimpse.feed.kept_pages import pack_counts

    counts = {7: (1, 2), 3: (0, 5)}
    assert list(pack_counts(counts)) == [3, 0, 5, 7, 1, 2]
    assert pack_counts(counts) == pack_counts({3: (0, 5), 7: (1, 2)})
    assert pack_counts(counts) != pack_counts({3: (0, 5), 7: (1, 3)})
    assert pack_counts(counts) != pack_counts({3: (0, 5)})  # a post gone
    assert pack_counts(counts) != pack_counts({7: (1, 2), 3: (0, 5), 9: (0, 0)})


def test_the_counts_seen_are_those_of_every_window_read() -> None:
    from types import SimpleNamespace
    from typing import Any, cast

    from glimpse.feed import service
    from glimpse.feed.repository import COMMENT_COUNT, LIKE_COUNT
    from glimpse.posts.views import POST_COLUMN_NAMES

    def values(post: int, likes: int, comments: int) -> tuple[Any, ...]:
        row: list[Any] = [None] * len(POST_COLUMN_NAMES)
        row[0], row[LIKE_COUNT], row[COMMENT_COUNT] = post, likes, comments
        return tuple(row)

    reader = service._Reader(cast(Any, SimpleNamespace(feed_store=None)), 1)
    reader._seen = [{7: values(7, 1, 2)}, {}, {5: values(5, 3, 4)}]
    assert reader.counts_seen() == {7: (1, 2), 5: (3, 4)}
