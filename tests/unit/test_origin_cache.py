from __future__ import annotations

from glimpse.media.origin_cache import OriginCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_visibility_is_remembered_for_the_ttl_and_then_asked_again() -> None:
    clock = Clock()
    cache = OriginCache(ttl_seconds=10, max_bytes=1000, clock=clock)
    cache.put("k", "public", 3, b"abc")
    clock.now += 10
    entry = cache.get("k")
    assert entry is not None and (entry.visibility, entry.data) == ("public", b"abc")
    clock.now += 0.1
    assert cache.get("k") is None


def test_bytes_outlive_a_refreshed_visibility_but_not_a_deletion() -> None:
    cache = OriginCache(ttl_seconds=0, max_bytes=1000)
    cache.put("k", "public", 3, b"abc")
    assert cache.put("k", "private", 3, None).data == b"abc"  # same key, same bytes
    assert cache.put("k", None, 0, None).data is None
    assert cache.cached_bytes == 0


def test_least_recently_used_bytes_go_first_when_over_budget() -> None:
    cache = OriginCache(ttl_seconds=60, max_bytes=160)
    for key in "abc":
        cache.put(key, "public", 10, b"x" * 10)
    assert cache.get("a") is not None  # "a" is now the most recently used
    for key in "defghijklmnopq":
        cache.put(key, "public", 10, b"x" * 10)
    assert cache.cached_bytes <= 160
    assert cache.get("b") is None and cache.get("q") is not None


def test_one_large_file_is_not_kept_in_memory() -> None:
    cache = OriginCache(ttl_seconds=60, max_bytes=1600)
    entry = cache.put("big", "public", 200, b"x" * 200)
    assert entry.data is None and entry.visibility == "public" and entry.size == 200
    assert cache.cached_bytes == 0


def test_entry_count_is_bounded_too() -> None:
    cache = OriginCache(ttl_seconds=60, max_bytes=1000, max_entries=3)
    for key in "abcd":
        cache.put(key, None, 0, None)
    assert len(cache) == 3 and cache.get("a") is None


def test_a_viewers_verdict_is_kept_for_the_ttl_only_and_per_viewer() -> None:
    clock = Clock()
    cache = OriginCache(ttl_seconds=10, max_bytes=1000, clock=clock)
    assert cache.verdict("k", 1) is None
    cache.remember_verdict("k", 1, True)
    cache.remember_verdict("k", 2, False)
    assert (cache.verdict("k", 1), cache.verdict("k", 2), cache.verdict("other", 1)) == (
        True,
        False,
        None,
    )
    clock.now += 10
    assert cache.verdict("k", 1) is True
    clock.now += 0.1
    assert cache.verdict("k", 1) is None  # asked again: an unfollow counts from here


def test_verdicts_are_bounded_oldest_first() -> None:
    cache = OriginCache(ttl_seconds=60, max_bytes=1000, max_entries=2)
    for viewer in (1, 2, 3):
        cache.remember_verdict("k", viewer, True)
    assert [cache.verdict("k", v) for v in (1, 2, 3)] == [None, True, True]
