"""Database.write on SQLite, more of its turns (db/write_turns.py) and of the busy timeout left
to a writer that waited for its turn (_BUSY_BUDGET_MS):

- a turn waited for past the busy timeout is refused as busy (the wait for a turn is bounded
  by the busy timeout itself, not by some multiple of it);
- the budget is the write engine's alone: a read opened inside a write that waited keeps its
  connection's busy timeout;
- a write whose turn came with nothing left of the busy timeout still gets the least budget
  (1 ms), never 0, which SQLite and on_begin would both take for "no budget": the full busy
  timeout again.

No test here asserts how long anything took: the waits are ordered by the event loop's own
timers (the shorter deadline fires first), or the loop's clock is moved by hand."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from glimpse.db.database import Database
from glimpse.db.failures import try_again_soon
from glimpse.db.migrate import upgrade_to_head
from glimpse.db.write_turns import WriteTurns

pytestmark = pytest.mark.embedded


async def _database(tmp_path: Path, busy_timeout_ms: int) -> Database:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    upgrade_to_head(url)
    db = Database(url, busy_timeout_ms=busy_timeout_ms)
    async with db.write() as session:
        await session.execute(text("CREATE TABLE tally (n INTEGER NOT NULL)"))
        await session.execute(text("INSERT INTO tally VALUES (0)"))
    return db


async def _count(db: Database) -> int:
    async with db.read() as session:
        return int((await session.execute(text("SELECT n FROM tally"))).scalar_one())


def _pragmas(engine: Any) -> tuple[list[int], Any]:
    """The busy timeouts set on the engine's connections, in order, and the listener."""
    seen: list[int] = []

    def listener(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("PRAGMA busy_timeout="):
            seen.append(int(statement.split("=")[1]))

    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    return seen, listener


async def test_a_turn_waited_for_past_the_busy_timeout_is_refused_as_busy(tmp_path: Path) -> None:
    # The process's own writer holds its turn for up to five busy timeouts, and gives it back
    # as soon as the second writer is done. The second must have been refused by then (its
    # bound's timer fires first), as SQLite refuses a busy write: a 503, never a wait of many
    # busy timeouts.
    db = await _database(tmp_path, busy_timeout_ms=200)
    holding = asyncio.Event()
    second_done = asyncio.Event()

    async def hold() -> None:
        async with db.write() as session:
            await session.execute(text("UPDATE tally SET n = n + 100"))
            holding.set()
            with contextlib.suppress(TimeoutError):  # (the second was not refused)
                await asyncio.wait_for(second_done.wait(), 1.0)

    async def second() -> OperationalError | None:
        await holding.wait()
        try:
            async with db.write() as session:
                await session.execute(text("UPDATE tally SET n = n + 1"))
        except OperationalError as exc:
            return exc
        finally:
            second_done.set()
        return None

    try:
        _, refused = await asyncio.gather(hold(), second())
        assert refused is not None, "the second writer waited for its turn past the busy timeout"
        assert try_again_soon(refused)
        assert await _count(db) == 100
        async with db.write() as session:  # the refused writer kept no place in the line
            await session.execute(text("UPDATE tally SET n = n + 1"))
        assert await _count(db) == 101
    finally:
        await db.dispose()


async def test_a_read_inside_a_write_that_waited_keeps_its_busy_timeout(tmp_path: Path) -> None:
    # The budget is for the write's wait for SQLite's write lock; the read engine never takes
    # it (its connections are not the write's, and nothing would put theirs back in time).
    db = await _database(tmp_path, busy_timeout_ms=2000)
    write_pragmas, on_write = _pragmas(db.write_engine)
    read_pragmas, on_read = _pragmas(db.read_engine)
    holding = asyncio.Event()

    async def hold() -> None:
        async with db.write() as session:
            await session.execute(text("UPDATE tally SET n = n + 1"))
            holding.set()
            await asyncio.sleep(0.5)

    async def after() -> int:
        await holding.wait()
        async with db.write() as session:  # waits at least 0.5 s for its turn
            await session.execute(text("UPDATE tally SET n = n + 1"))
            async with db.read() as reading:
                return int((await reading.execute(text("SELECT n FROM tally"))).scalar_one())

    try:
        _, seen_by_read = await asyncio.gather(hold(), after())
    finally:
        event.remove(db.write_engine.sync_engine, "before_cursor_execute", on_write)
        event.remove(db.read_engine.sync_engine, "before_cursor_execute", on_read)
        await db.dispose()
    assert seen_by_read == 1  # (the read's snapshot: the write it is inside is not committed)
    assert write_pragmas and write_pragmas[0] <= 1500  # the write did take a budget
    assert read_pragmas == []


async def test_a_turn_that_came_with_nothing_left_waits_the_least_not_the_whole_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loop's clock is moved past the whole busy timeout while the writer waits for its
    # turn (as a turn granted in the loop turn its bound expires, and resumed late, would see).
    db = await _database(tmp_path, busy_timeout_ms=2000)
    pragmas, listener = _pragmas(db.write_engine)
    loop = asyncio.get_running_loop()
    ahead = 0.0
    real_time = loop.time
    real_take = WriteTurns.take

    def time() -> float:
        return real_time() + ahead

    async def take_late(self: WriteTurns, seconds: float) -> None:
        nonlocal ahead
        await real_take(self, seconds)
        ahead += seconds + 0.05

    monkeypatch.setattr(loop, "time", time)
    monkeypatch.setattr(WriteTurns, "take", take_late)
    try:
        async with db.write() as session:
            await session.execute(text("UPDATE tally SET n = n + 1"))
    finally:
        monkeypatch.undo()
        event.remove(db.write_engine.sync_engine, "before_cursor_execute", listener)
        await db.dispose()
    assert pragmas[:1] == [1]
