"""The feed store contract, for every implementation: the embedded one against a real SQLite
file, and Redis against a real server. Windows honour the horizon, the horizon never goes down,
trims keep the cap, a half-built feed is no feed, and a feed lost in part is no feed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from glimpse.accounts.models import User
from glimpse.backends.feed import FeedStore, feed_store_from_url
from glimpse.backends.redis_client import open_redis, parse_redis_url
from glimpse.db.base import utcnow
from glimpse.db.database import Database
from glimpse.db.migrate import upgrade_to_head
from tests.redis_service import redis_url  # noqa: F401  (a fixture)

U, A, B = 1, 2, 3
OTHERS = (10, 11, 12)  # more readers, for what works on many feeds at once


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    upgrade_to_head(url)
    database = Database(url)
    async with database.write() as session:
        for user_id in (U, A, B, *OTHERS):
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


MakeStore = Callable[..., FeedStore]


@pytest.fixture(params=["sql", "redis"])
async def make_store(request: pytest.FixtureRequest, db: Database) -> AsyncIterator[MakeStore]:
    """Builds the store under test with a given cap (and idle TTL)."""
    url = "sql://" if request.param == "sql" else request.getfixturevalue("redis_url")
    clients = []

    def make(cap: int, idle_ttl: float = 3600.0) -> FeedStore:
        client = open_redis(parse_redis_url(url)) if url != "sql://" else None
        if client is not None:
            clients.append(client)
        return feed_store_from_url(url, db, cap=cap, idle_ttl=idle_ttl, redis=client)

    yield make
    for client in clients:
        await client.aclose()


async def built(store: FeedStore, entries: list[tuple[int, int]], horizon: int = 0) -> None:
    await store.begin_rebuild(U, time.time())
    await store.finish_rebuild(U, entries, horizon, time.time())


async def horizon_of(store: FeedStore) -> int:
    window = await store.window(U, None, 1)
    assert window is not None
    return window.horizon_id


async def entries_of(store: FeedStore, user_id: int = U) -> list[tuple[int, int]] | None:
    window = await store.window(user_id, None, 100_000)
    return None if window is None else window.entries


async def test_a_feed_being_built_is_no_feed_yet(make_store: MakeStore) -> None:
    store = make_store(100)
    await store.begin_rebuild(U, time.time())  # and then the process died
    assert await store.window(U, None, 10) is None
    await store.finish_rebuild(U, [(5, A)], 0, time.time())
    window = await store.window(U, None, 10)
    assert window is not None and window.entries == [(5, A)]


async def test_a_window_holds_only_entries_at_or_above_the_horizon(make_store: MakeStore) -> None:
    store = make_store(100)
    await built(store, [(1, A), (2, A), (50, A)])
    await store.merge(U, [(60, B)], complete_above=40)
    window = await store.window(U, None, 10)
    assert window is not None
    assert (window.entries, window.horizon_id) == ([(60, B), (50, A)], 40)
    below = await store.window(U, 50, 10)
    assert below is not None and below.entries == []  # 1 and 2 are the database's to answer


async def test_a_merge_keeps_the_entry_its_horizon_is_set_at(make_store: MakeStore) -> None:
    # The horizon is inclusive: a window holds the post at it, so a merge must keep that post,
    # whether the merge raises the horizon to it or finds it there already.
    store = make_store(100)
    await built(store, [(50, A)])
    await store.merge(U, [(39, B), (40, B), (60, B)], complete_above=40)
    window = await store.window(U, None, 10)
    assert window is not None
    assert (window.entries, window.horizon_id) == ([(60, B), (50, A), (40, B)], 40)
    await store.drop(U)
    await built(store, [(50, A)], horizon=45)
    await store.merge(U, [(44, B), (45, B)])
    assert await entries_of(store) == [(50, A), (45, B)]


async def test_a_merge_or_a_trim_never_lowers_the_horizon(make_store: MakeStore) -> None:
    store = make_store(5)
    await built(store, [(i, A) for i in (1, 2, 3, 4, 5, 6, 100)], horizon=100)
    await store.merge(U, [(101, B)], complete_above=40)
    assert await horizon_of(store) == 100
    for post_id in range(102, 110):  # past the cap and its margin: trims
        await store.push(post_id, A, [U])
    assert await horizon_of(store) >= 100
    window = await store.window(U, None, 100)
    assert window is not None and min(p for p, _ in window.entries) >= window.horizon_id


async def test_pushes_keep_a_feed_near_its_cap(make_store: MakeStore) -> None:
    store = make_store(5)
    await built(store, [])
    for post_id in range(1, 21):
        await store.push(post_id, A, [U, B])  # B has no feed: nothing for B
    assert await entries_of(store, B) is None
    kept = await entries_of(store)
    assert kept is not None and 5 <= len(kept) <= 5 + 5 // 10 + 1
    assert kept[0] == (20, A)
    # What was trimmed is below the horizon: the database's to answer.
    assert min(p for p, _ in kept) >= await horizon_of(store) > 1


async def test_a_trim_keeps_exactly_the_cap_and_the_oldest_kept_is_the_horizon(
    make_store: MakeStore,
) -> None:
    store = make_store(10)  # trimmed once past 11 entries (a tenth over the cap)
    await built(store, [])
    for post_id in range(1, 12):
        await store.push(post_id, A, [U])
    assert await entries_of(store) == [(p, A) for p in range(11, 0, -1)]
    assert await horizon_of(store) == 0
    await store.push(12, A, [U])
    assert await entries_of(store) == [(p, A) for p in range(12, 2, -1)]
    assert await horizon_of(store) == 3


async def test_a_push_reaches_a_feed_being_built(make_store: MakeStore) -> None:
    # The rebuild read the database before this post was ready; the push is what brings it.
    store = make_store(100)
    await store.begin_rebuild(U, time.time())
    assert await store.push(7, A, [U, B]) == 1
    await store.finish_rebuild(U, [(5, A)], 0, time.time())
    assert await entries_of(store) == [(7, A), (5, A)]


async def test_replayed_operations_change_nothing_more(make_store: MakeStore) -> None:
    store = make_store(100)
    await built(store, [(5, A)])
    for _ in range(2):  # jobs are delivered at least once
        await store.push(9, B, [U])
        await store.merge(U, [(7, A)])
    assert await entries_of(store) == [(9, B), (7, A), (5, A)]


async def test_windows_page_through_63_bit_ids_in_order(make_store: MakeStore) -> None:
    # Real ids use 63 bits: as doubles, neighbours of one millisecond would tie or swap.
    store = make_store(100)
    base = (1 << 62) + (123 << 23)
    ids = [base + i for i in (0, 1, 2, 1023, 1024)]
    await built(store, [(i, A) for i in ids])
    first = await store.window(U, None, 2)
    assert first is not None and [p for p, _ in first.entries] == [ids[4], ids[3]]
    rest = await store.window(U, ids[3], 10)
    assert rest is not None and [p for p, _ in rest.entries] == [ids[2], ids[1], ids[0]]


async def test_removing_an_author_or_a_post_leaves_the_rest(make_store: MakeStore) -> None:
    store = make_store(100)
    await built(store, [(1, A), (2, B), (3, A), (4, B)])
    await store.remove_author([U], A)
    assert await entries_of(store) == [(4, B), (2, B)]
    await store.remove_post(4, [U, B])
    assert await entries_of(store) == [(2, B)]


async def test_an_author_leaves_many_feeds_at_once_and_no_other(make_store: MakeStore) -> None:
    """An erased account leaves a batch of its followers' feeds in one call."""
    store = make_store(100)
    for user_id in (U, *OTHERS):
        await store.begin_rebuild(user_id, time.time())
        await store.finish_rebuild(user_id, [(1, A), (2, B), (3, A)], 0, time.time())
    await store.remove_author([U, 10, 11, 11], A)
    for user_id in (U, 10, 11):
        assert await entries_of(store, user_id) == [(2, B)]
    assert await entries_of(store, 12) == [(3, A), (2, B), (1, A)]  # not in the batch
    await store.remove_author([], A)  # nothing to do is no error


async def test_a_merge_or_push_without_a_feed_creates_none(make_store: MakeStore) -> None:
    store = make_store(100)
    await store.merge(U, [(1, A)])
    assert await store.push(2, A, [U]) == 0
    assert await store.window(U, None, 10) is None


async def test_expire_drops_idle_feeds_and_keeps_read_ones(make_store: MakeStore) -> None:
    store = make_store(100)
    long_ago = time.time() - 10_000
    for user_id in (U, B):
        await store.begin_rebuild(user_id, long_ago)
        await store.finish_rebuild(user_id, [(1, A)], 0, long_ago)
    await store.touch(U, time.time())
    assert await store.expire(time.time() - 5_000, 10) == 1
    assert await store.expire(time.time() - 5_000, 10) == 0
    assert await entries_of(store, B) is None
    window = await store.window(U, None, 10)
    assert window is not None and window.read_at > long_ago
    await store.drop(U)
    assert await store.window(U, None, 10) is None


async def test_check_is_a_round_trip(make_store: MakeStore) -> None:
    await make_store(100).check()
