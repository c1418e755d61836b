"""Kept first pages and the database's version (feed/kept_pages.first_page): a page is trusted
with no look only at the very same version (the same count of the same quick connection), and
a page renewed on the slow path remembers the version read BEFORE its counts were looked at."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from glimpse.config import Settings
from glimpse.db.database import Database
from glimpse.feed import kept_pages, service
from glimpse.feed import repository as feed_repository
from tests.api.social import feed, user_id
from tests.api.test_kept_pages import KEPT_SECONDS, Clock, _kept_page, world
from tests.api.test_quiet_database import by_hand, touch
from tests.conftest import Glimpse

__all__ = ["world"]  # (a fixture, shared with test_kept_pages.py)

pytestmark = [
    pytest.mark.embedded,  # (SQLite's data_version)
    pytest.mark.parametrize("settings", [{"feed_kept_page_seconds": KEPT_SECONDS}], indirect=True),
]


def version_on_a_thread_of_its_own(db: Database) -> tuple[int, int] | None:
    """The version as a new thread reads it: on a quick connection of its own, opened afresh."""
    read: list[tuple[int, int] | None] = []
    thread = threading.Thread(target=lambda: read.append(db.version()))
    thread.start()
    thread.join()
    return read[0]


async def test_a_kept_page_is_not_trusted_at_another_connections_count_however_alike(
    glimpse: Glimpse, settings: Settings, world: dict[str, Any]
) -> None:
    container = glimpse.container
    viewer = world["people"]["viewer"]
    viewer_id = await user_id(glimpse, viewer)
    author_id = await user_id(glimpse, world["people"]["author"])
    await feed(glimpse, viewer, "latest")  # (the viewer's feed built)
    pulled = await service.pulled_accounts(container, viewer_id)

    def first_page(body: bytes, version: tuple[int, int] | None) -> Any:
        async def build() -> kept_pages.Built:
            return kept_pages.Built(body, {author_id})

        return kept_pages.first_page(container, viewer_id, "latest", 7, pulled, build, version)

    before = version_on_a_thread_of_its_own(container.db)
    assert await first_page(b"first", before) == b"first"
    assert await first_page(b"afresh", before) == b"first"  # (kept, nothing committed)
    # The post goes (its author's mark moves); the version is then read on another quick
    # connection, which counts anew: its count alone may read as the first one's did.
    by_hand(settings, "UPDATE posts SET status = 'failed' WHERE id = :p", {"p": int(world["post"])})
    after = version_on_a_thread_of_its_own(container.db)
    assert after is not None and before is not None and after[1] == before[1]  # (alike)
    assert await first_page(b"afresh", after) == b"afresh"


@pytest.mark.parametrize("order", ["ranked", "latest"])
async def test_a_count_changed_while_a_page_is_renewed_shows_once_its_time_is_up(
    glimpse: Glimpse,
    settings: Settings,
    world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    order: str,
) -> None:
    container = glimpse.container
    clock = Clock(container.clock())
    container.clock = clock
    viewer, post = world["people"]["viewer"], world["post"]
    await _kept_page(glimpse, viewer, order)
    touch(settings)  # (the next read looks at the page: its marks, then, its time up, counts)
    clock.now += KEPT_SECONDS
    read_counts = feed_repository.post_counts

    async def then_a_count_changes(*args: Any) -> Any:
        counts = await read_counts(*args)
        monkeypatch.setattr(feed_repository, "post_counts", read_counts)
        # elsewhere, just after the counts were read (moves no mark)
        by_hand(settings, "UPDATE posts SET like_count = 7 WHERE id = :p", {"p": int(post)})
        return counts

    monkeypatch.setattr(feed_repository, "post_counts", then_a_count_changes)
    # Renewed: its counts were the same when read.
    assert (await feed(glimpse, viewer, order))["items"][0]["like_count"] == 0
    assert (await feed(glimpse, viewer, order))["items"][0]["like_count"] == 0  # (a moment late)
    # Its time up again, it is renewed only if its counts are the same: they are not.
    clock.now += KEPT_SECONDS
    assert (await feed(glimpse, viewer, order))["items"][0]["like_count"] == 7
