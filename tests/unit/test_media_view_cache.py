"""The per-process cache of public posts' media views: a view whose photos still lack their
AVIF copies is kept for a moment only, so the copies are listed soon after they are made."""

from __future__ import annotations

from typing import Any

import pytest

from glimpse.posts import views
from glimpse.posts.views import MediaViewCache


def photo(*content_types: str) -> dict[str, Any]:
    return {
        "kind": "image",
        "variants": [{"name": "w1080", "content_type": t} for t in content_types],
    }


def video() -> dict[str, Any]:
    return {"kind": "video", "variants": [{"name": "poster", "content_type": "image/jpeg"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(views.time, "monotonic", clock.monotonic)
    return clock


def test_a_view_without_avif_copies_expires_and_one_with_them_stays(clock: Clock) -> None:
    cache = MediaViewCache(expect_avif=True, unfinished_seconds=10)
    unfinished = [photo("image/jpeg", "image/webp"), video()]
    finished = [photo("image/jpeg", "image/webp", "image/avif"), video()]
    cache.put(1, unfinished)
    cache.put(2, finished)
    clock.now += 9.9
    assert cache.get(1) == unfinished and cache.get(2) == finished
    clock.now += 0.1
    assert cache.get(1) is None  # read again from the database, AVIF copies and all
    clock.now += 86400
    assert cache.get(2) == finished


def test_a_post_with_one_photo_still_without_copies_is_unfinished(clock: Clock) -> None:
    cache = MediaViewCache(expect_avif=True, unfinished_seconds=10)
    cache.put(1, [photo("image/avif"), photo("image/jpeg")])
    clock.now += 11
    assert cache.get(1) is None


def test_where_no_copies_are_made_every_view_stays(clock: Clock) -> None:
    cache = MediaViewCache(expect_avif=False, unfinished_seconds=10)
    cache.put(1, [photo("image/jpeg", "image/webp")])
    clock.now += 86400
    assert cache.get(1) is not None


def test_the_oldest_view_goes_past_the_cap(clock: Clock) -> None:
    cache = MediaViewCache(max_posts=2)
    for post_id in (1, 2, 3):
        cache.put(post_id, [photo("image/jpeg")])
    assert cache.get(1) is None and cache.get(3) is not None
