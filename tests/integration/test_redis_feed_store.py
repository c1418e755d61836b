"""What the Redis feed store adds to the contract (tests/integration/test_feed_store.py): its
keys expire with inactivity, a feed lost in part is no feed (and is rebuilt whole), big
fan-outs go in batches, and a server that cannot be reached is FeedStoreUnavailable."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis as sync_redis

from glimpse.backends.feed import FeedStoreUnavailable
from glimpse.backends.feed.redis import RedisFeedStore
from glimpse.backends.redis_client import open_redis, parse_redis_url
from tests.redis_service import redis_url  # noqa: F401  (a fixture)
from tests.servers import free_port

U, A = 1, 2
IDLE_TTL = 1000.0


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisFeedStore]:  # noqa: F811
    target = parse_redis_url(redis_url)
    client = open_redis(target)
    yield RedisFeedStore(client, prefix=target.prefix, cap=100, idle_ttl=IDLE_TTL)
    await client.aclose()


@pytest.fixture
def raw(redis_url: str) -> sync_redis.Redis:  # noqa: F811
    return sync_redis.Redis.from_url(parse_redis_url(redis_url).url)


def keys_of(redis_url: str, user_id: int) -> tuple[str, str]:  # noqa: F811
    entries = f"{parse_redis_url(redis_url).prefix}feed:{user_id}"
    return f"{entries}:meta", entries


async def build(store: RedisFeedStore, user_id: int = U, at: float | None = None) -> None:
    now = time.time() if at is None else at
    await store.begin_rebuild(user_id, now)
    await store.finish_rebuild(user_id, [(5, A)], 0, now)


async def test_a_feed_expires_unless_it_is_read(
    store: RedisFeedStore,
    raw: sync_redis.Redis,
    redis_url: str,  # noqa: F811
) -> None:
    await build(store)
    meta, entries = keys_of(redis_url, U)
    ttl = IDLE_TTL + store.TOUCH_SECONDS
    for key in (meta, entries):
        assert ttl - 5 <= raw.ttl(key) <= ttl + 1
    raw.expire(meta, 10)
    raw.expire(entries, 10)
    await store.push(6, A, [U])  # a push is no read: it keeps no feed alive
    assert raw.ttl(entries) <= 10
    await store.touch(U, time.time() + 1)
    assert raw.ttl(meta) > 10 and raw.ttl(entries) > 10


async def test_a_feed_whose_build_never_finished_still_expires(
    store: RedisFeedStore,
    raw: sync_redis.Redis,
    redis_url: str,  # noqa: F811
) -> None:
    # The builder died between begin_rebuild and finish_rebuild: every key of the feed must
    # still expire, and expire() must find it, or it would stay in memory for good.
    long_ago = time.time() - 10_000
    await store.begin_rebuild(U, long_ago)
    ttl = IDLE_TTL + store.TOUCH_SECONDS
    for key in keys_of(redis_url, U):
        assert ttl - 5 <= raw.ttl(key) <= ttl + 1
    assert await store.expire(time.time() - 5_000, 10) == 1
    assert raw.exists(*keys_of(redis_url, U)) == 0


async def test_expire_and_drop_leave_no_key_of_the_feed_behind(
    store: RedisFeedStore,
    raw: sync_redis.Redis,
    redis_url: str,  # noqa: F811
) -> None:
    # A hash left alone would hold its memory until its TTL; an index entry left would be
    # counted again by the next expire().
    index = f"{parse_redis_url(redis_url).prefix}feeds:read"
    long_ago = time.time() - 10_000
    for user_id in (U, 7):
        await build(store, user_id, at=long_ago)
    assert await store.expire(time.time() - 5_000, 1) == 1
    await store.drop(7)
    for user_id in (U, 7):
        assert raw.exists(*keys_of(redis_url, user_id)) == 0
    assert raw.zcard(index) == 0
    assert await store.expire(time.time(), 10) == 0


@pytest.mark.parametrize("lost", ["meta", "entries"])
async def test_a_feed_lost_in_part_is_no_feed_and_is_rebuilt_whole(
    store: RedisFeedStore,
    raw: sync_redis.Redis,
    redis_url: str,  # noqa: F811
    lost: str,
) -> None:
    # An eviction or an expiry may take one key of the two: an empty-looking feed would hide
    # every post in it, so it must read as no feed at all.
    await build(store)
    await store.push(7, A, [U])
    meta, entries = keys_of(redis_url, U)
    raw.delete(meta if lost == "meta" else entries)
    assert await store.window(U, None, 10) is None
    await store.push(8, A, [U])  # (may land in what is left: the rebuild starts afresh)
    await build(store)
    window = await store.window(U, None, 10)
    assert window is not None and window.entries == [(5, A)]


async def test_pushes_past_the_cap_into_a_feed_that_lost_its_hash_make_no_feed(
    store: RedisFeedStore,
    raw: sync_redis.Redis,
    redis_url: str,  # noqa: F811
) -> None:
    await build(store)
    meta, _ = keys_of(redis_url, U)
    raw.delete(meta)
    for post_id in range(10, 10 + 2 * store.cap):  # trims, which would set a horizon
        await store.push(post_id, A, [U])
    assert await store.window(U, None, 10) is None


async def test_a_fan_out_to_thousands_of_users_reaches_those_with_feeds(
    store: RedisFeedStore,
) -> None:
    users = list(range(100, 3600))
    with_feeds = users[::3]
    for user_id in with_feeds:
        await build(store, user_id)
    assert await store.push(9, A, users) == len(with_feeds)
    window = await store.window(with_feeds[-1], None, 10)
    assert window is not None and window.entries == [(9, A), (5, A)]


async def test_an_unreachable_server_is_unavailable_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = parse_redis_url(f"redis://127.0.0.1:{free_port()}/0")
    client = open_redis(target)
    store = RedisFeedStore(client, prefix="x:", cap=100, idle_ttl=IDLE_TTL)
    try:
        with pytest.raises(FeedStoreUnavailable) as raised:
            await store.window(U, None, 10)
        assert raised.value.status == 503 and raised.value.headers == {"Retry-After": "5"}
        for call in (
            store.push(1, A, [U]),
            store.begin_rebuild(U, 0.0),
            store.touch(U, 0.0),
            store.expire(0.0, 10),
            store.remove_post(1, [U]),
        ):
            with pytest.raises(FeedStoreUnavailable):
                await call
        with pytest.raises(Exception):  # noqa: B017  (/readyz: whatever the client raises)
            await store.check()
    finally:
        await client.aclose()


async def test_after_a_failure_calls_fail_without_asking_the_server_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Requests must not each wait for a timeout while Redis is down: after one failure, calls
    # raise at once for RETRY_SECONDS, then ask the server again.
    client = open_redis(parse_redis_url(f"redis://127.0.0.1:{free_port()}/0"))
    store = RedisFeedStore(client, prefix="x:", cap=100, idle_ttl=IDLE_TTL)
    asked = 0
    window_script = store._window

    async def counted(**kwargs: Any) -> Any:
        nonlocal asked
        asked += 1
        return await window_script(**kwargs)

    monkeypatch.setattr(store, "_window", counted)
    try:
        with pytest.raises(FeedStoreUnavailable):
            await store.window(U, None, 10)
        assert asked == 1
        for _ in range(3):
            with pytest.raises(FeedStoreUnavailable):
                await store.window(U, None, 10)
        assert asked == 1
        monkeypatch.setattr(store, "_down_until", 0.0)  # RETRY_SECONDS later
        with pytest.raises(FeedStoreUnavailable):
            await store.window(U, None, 10)
        assert asked == 2
    finally:
        await client.aclose()


async def test_a_server_that_never_answers_is_unavailable_not_an_error() -> None:
    # Connections accepted (by the kernel) and never read: the command times out, which is
    # the store being unavailable (a 503, or the database's answer), never a 500.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    client = open_redis(parse_redis_url(f"redis://127.0.0.1:{silent.getsockname()[1]}/0"))
    store = RedisFeedStore(client, prefix="x:", cap=100, idle_ttl=IDLE_TTL)
    try:
        with pytest.raises(FeedStoreUnavailable):
            # (the guard only stops a hang from hanging the run; it times nothing)
            await asyncio.wait_for(store.window(U, None, 10), timeout=60)
    finally:
        await client.aclose()
        silent.close()


async def test_a_connection_closed_under_the_client_is_unavailable_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Seen live (a Redis that dropped its connections while the API reconnected, on uvloop):
    # redis-py wrote to a transport already closed and uvloop raised RuntimeError, which went
    # through GET /api/v1/feed as a 500 (feed/kept_pages.py reads the window first).
    client = open_redis(parse_redis_url(f"redis://127.0.0.1:{free_port()}/0"))
    store = RedisFeedStore(client, prefix="x:", cap=100, idle_ttl=IDLE_TTL)

    async def closed(**kwargs: Any) -> Any:
        raise RuntimeError(
            "unable to perform operation on <TCPTransport closed=True reading=False>;"
            " the handler is closed"
        )

    monkeypatch.setattr(store, "_window", closed)
    try:
        with pytest.raises(FeedStoreUnavailable):
            await store.window(U, None, 10)
    finally:
        await client.aclose()


def test_a_write_to_a_connection_closed_under_it_is_retried_on_a_new_one(
    redis_url: str,  # noqa: F811  (the fixture)
) -> None:
    """On uvloop (as `glimpse serve` runs), redis-py's write to a transport that Redis closed
    under it raised uvloop's RuntimeError: a 500 from any Redis user of the process. The pool's
    connections make it a ConnectionError, which the client's retry answers with a new one."""
    import uvloop

    async def run() -> None:
        client = open_redis(parse_redis_url(redis_url))
        try:
            await client.set("glimpse-test-closed", b"1")
            connection = await client.connection_pool.get_connection()
            writer = connection._writer  # type: ignore[attr-defined]
            assert writer is not None

            def closed(data: Any) -> None:
                raise RuntimeError(
                    "unable to perform operation on <TCPTransport closed=True reading=False>;"
                    " the handler is closed"
                )

            writer.writelines = closed
            await client.connection_pool.release(connection)
            assert await client.get("glimpse-test-closed") == b"1"  # (a RuntimeError before)
            await client.delete("glimpse-test-closed")
        finally:
            await client.aclose()

    uvloop.run(run())
