"""Read-your-own-writes notes (db/write_notes.py): the same contract in this process's memory and
in a real Redis, which two keepers (two API processes) share; and Redis down, then back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from glimpse.backends.redis_client import open_redis, parse_redis_url
from glimpse.backends.redis_write_notes import RedisWriteNotes
from glimpse.db.write_notes import (
    READ_THE_PRIMARY,
    MemoryWriteNotes,
    Note,
    WriteNotes,
    lsn_number,
)
from tests.redis_service import RedisProxy, redis_or_skip

KEEPERS = ("memory", "redis")


@pytest.fixture(params=KEEPERS)
async def keepers(request: pytest.FixtureRequest) -> AsyncIterator[tuple[WriteNotes, WriteNotes]]:
    """Two keepers as two API processes have them: for Redis, two clients of one server."""
    if request.param == "memory":
        shared = MemoryWriteNotes()
        yield shared, shared
        return
    url = request.getfixturevalue("redis_url")
    target = parse_redis_url(url)
    clients = [open_redis(target), open_redis(target)]
    try:
        yield RedisWriteNotes(clients[0], target.prefix), RedisWriteNotes(clients[1], target.prefix)
    finally:
        for client in clients:
            await client.aclose()


async def test_a_note_holds_the_latest_position_whatever_order_they_arrive_in(
    keepers: tuple[WriteNotes, WriteNotes],
) -> None:
    a, b = keepers
    assert await b.get(7) is None
    await a.note(7, lsn_number("1/A0"))
    assert await b.get(7) == Note(lsn=lsn_number("1/A0"))
    await b.note(7, lsn_number("0/FFFFFFFF"))  # an earlier write's note, arriving late
    assert await a.get(7) == Note(lsn=lsn_number("1/A0"))
    await b.note(7, lsn_number("2/0"))
    assert await a.get(7) == Note(lsn=lsn_number("2/0"))
    assert await a.get(8) is None  # others have no note


async def test_a_replayed_position_is_dropped_unless_a_later_write_moved_it_on(
    keepers: tuple[WriteNotes, WriteNotes],
) -> None:
    a, b = keepers
    await a.note(7, 100)
    await b.note(7, 200)
    await a.forget(7, 100)  # a replica had replayed the first write, not the second
    assert await b.get(7) == Note(lsn=200)
    await a.forget(7, 200)
    assert await b.get(7) is None


async def test_a_write_whose_position_is_unknown_pins_its_caller_to_the_primary(
    keepers: tuple[WriteNotes, WriteNotes],
) -> None:
    a, b = keepers
    await a.note(7, 100)
    await a.note(7, None)
    assert await b.get(7) == READ_THE_PRIMARY
    await b.forget(7, 100)
    assert await a.get(7) == READ_THE_PRIMARY  # a replayed position does not lift the pin
    assert await a.get(8) is None


async def test_redis_down_sends_reads_to_the_primary_and_keeps_writes_noted_here() -> None:
    redis_or_skip()
    proxy = RedisProxy()
    await proxy.start()
    target = parse_redis_url(proxy.url(f"glimpse-test-{uuid.uuid4().hex[:12]}:"))
    client = open_redis(target)
    notes = RedisWriteNotes(client, target.prefix, retry_seconds=0)
    try:
        await notes.note(1, 100)
        await proxy.stop()
        assert await notes.get(1) == READ_THE_PRIMARY
        assert await notes.get(2) == READ_THE_PRIMARY  # nobody's note can be read
        await notes.note(2, 300)  # a write while down: noted in this process
        await notes.forget(1, 100)  # (cannot reach Redis: no error either)

        await proxy.start()  # back, on the same port
        assert await notes.get(1) == Note(lsn=100)
        assert await notes.get(2) == Note(lsn=300)
        assert await notes.get(3) is None
    finally:
        await proxy.stop()
        await client.aclose()
