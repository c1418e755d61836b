"""The embedded feed store against a real SQLite file: windows honour the horizon, the horizon
never goes down, trims keep the cap, and a half-built feed is no feed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from glimpse.accounts.models import User
from glimpse.backends.feed.sql import SqlFeedStore
from glimpse.db.base import utcnow
from glimpse.db.database import Database
from glimpse.db.migrate import upgrade_to_head

U, A, B = 1, 2, 3


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    upgrade_to_head(url)
    database = Database(url)
    async with database.write() as session:
        for user_id in (U, A, B):
            session.add(
                User(
                    id=user_id,
                    username=f"u{user_id}",
                    display_name="",
                    bio="",
                    is_private=False,
                    password_hash="x",
                    post_count=0,
                    follower_count=0,
                    following_count=0,
                    created_at=utcnow(),
                )
            )
    yield database
    await database.dispose()


async def built(store: SqlFeedStore, entries: list[tuple[int, int]], horizon: int = 0) -> None:
    await store.begin_rebuild(U, time.time())
    await store.finish_rebuild(U, entries, horizon, time.time())


async def horizon_of(db: Database) -> int:
    async with db.read() as s:
        return int(
            (
                await s.execute(text("select horizon_id from feeds where user_id = :u"), {"u": U})
            ).scalar_one()
        )


async def test_a_feed_being_built_is_no_feed_yet(db: Database) -> None:
    store = SqlFeedStore(db, cap=100)
    await store.begin_rebuild(U, time.time())  # and then the process died
    assert await store.window(U, None, 10) is None
    await store.finish_rebuild(U, [(5, A)], 0, time.time())
    window = await store.window(U, None, 10)
    assert window is not None and window.entries == [(5, A)]


async def test_a_window_holds_only_entries_at_or_above_the_horizon(db: Database) -> None:
    store = SqlFeedStore(db, cap=100)
    await built(store, [(1, A), (2, A), (50, A)])
    await store.merge(U, [(60, B)], complete_above=40)
    window = await store.window(U, None, 10)
    assert window is not None
    assert (window.entries, window.horizon_id) == ([(60, B), (50, A)], 40)
    below = await store.window(U, 50, 10)
    assert below is not None and below.entries == []  # 1 and 2 are the database's to answer


async def test_a_merge_or_a_trim_never_lowers_the_horizon(db: Database) -> None:
    store = SqlFeedStore(db, cap=5)
    await built(store, [(i, A) for i in (1, 2, 3, 4, 5, 6, 100)], horizon=100)
    await store.merge(U, [(101, B)], complete_above=40)
    assert await horizon_of(db) == 100
    for post_id in range(102, 110):  # past the cap and its margin: trims
        await store.push(post_id, A, [U])
    assert await horizon_of(db) >= 100
    window = await store.window(U, None, 100)
    assert window is not None and min(p for p, _ in window.entries) >= window.horizon_id


async def test_pushes_keep_a_feed_near_its_cap(db: Database) -> None:
    store = SqlFeedStore(db, cap=5)
    await built(store, [])
    for post_id in range(1, 21):
        await store.push(post_id, A, [U, B])  # B has no feed: nothing for B
    async with db.read() as s:
        counts = dict(
            (
                await s.execute(text("select user_id, count(*) from feed_entries group by user_id"))
            ).all()
        )
    assert set(counts) == {U}
    assert 5 <= counts[U] <= 5 + 5 // 10 + 1
    window = await store.window(U, None, 100)
    assert window is not None and window.entries[0] == (20, A)
