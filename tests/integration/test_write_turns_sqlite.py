"""Database.write on SQLite: this process's write transactions take turns (db/write_turns.py),
so no two of them ever wait on each other inside SQLite's busy handler; a turn is given back
whatever ends the transaction; another process's writer is still waited for, up to the busy
timeout, and past it the write is refused as busy (a 503, never a 500)."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from glimpse.db.database import Database
from glimpse.db.failures import try_again_soon
from glimpse.db.migrate import upgrade_to_head

pytestmark = pytest.mark.embedded


async def _database(tmp_path: Path, busy_timeout_ms: int = 5000) -> Database:
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


async def test_the_process_writers_never_hold_transactions_at_once(tmp_path: Path) -> None:
    db = await _database(tmp_path)
    in_transaction: set[int] = set()  # the connections that asked for the lock, until they end
    most = 0

    def asking(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        nonlocal most
        if statement.startswith("BEGIN"):
            in_transaction.add(id(conn))
            most = max(most, len(in_transaction))

    def ended(conn: Any) -> None:
        in_transaction.discard(id(conn))

    engine = db.write_engine.sync_engine
    event.listen(engine, "before_cursor_execute", asking)
    event.listen(engine, "commit", ended)
    event.listen(engine, "rollback", ended)
    try:

        async def add_one() -> None:
            async with db.write() as session:
                await session.execute(text("UPDATE tally SET n = n + 1"))
                await asyncio.sleep(0.002)  # a few turns of the loop inside the transaction

        await asyncio.gather(*(add_one() for _ in range(24)))
        # Without the turns, the pool's connections each BEGIN IMMEDIATE at once, and all but
        # one wait in SQLite's busy handler.
        assert most == 1
        assert await _count(db) == 24
    finally:
        event.remove(engine, "before_cursor_execute", asking)
        event.remove(engine, "commit", ended)
        event.remove(engine, "rollback", ended)
        await db.dispose()


async def test_a_transaction_that_raises_gives_its_turn_back(tmp_path: Path) -> None:
    db = await _database(tmp_path, busy_timeout_ms=300)
    try:
        with pytest.raises(RuntimeError):
            async with db.write() as session:
                await session.execute(text("UPDATE tally SET n = n + 100"))
                raise RuntimeError("the route's own mistake")
        async with db.write() as session:  # not refused as busy: the turn came back
            await session.execute(text("UPDATE tally SET n = n + 1"))
        assert await _count(db) == 1
    finally:
        await db.dispose()


async def test_another_process_writer_is_waited_for_then_refused_as_busy(tmp_path: Path) -> None:
    db = await _database(tmp_path, busy_timeout_ms=300)
    path = str(tmp_path / "g.db")
    try:
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another process's writer, holding on
            refused = []
            for _ in range(3):  # and the process's next writers, each refused in turn
                with pytest.raises(OperationalError) as busy:
                    async with db.write() as session:
                        await session.execute(text("UPDATE tally SET n = n + 1"))
                refused.append(try_again_soon(busy.value))
            assert refused == [True, True, True]
            other.execute("COMMIT")
        async with db.write() as session:  # the lock free again, the turn too
            await session.execute(text("UPDATE tally SET n = n + 1"))
        assert await _count(db) == 1
    finally:
        await db.dispose()


async def test_a_cancelled_request_gives_its_turn_back(tmp_path: Path) -> None:
    db = await _database(tmp_path, busy_timeout_ms=300)
    inside = asyncio.Event()

    async def slow() -> None:
        async with db.write() as session:
            await session.execute(text("UPDATE tally SET n = n + 100"))
            inside.set()
            await asyncio.sleep(30)

    try:
        task = asyncio.create_task(slow())
        await asyncio.wait_for(inside.wait(), 10)
        task.cancel()  # a client gone mid-transaction
        with pytest.raises(asyncio.CancelledError):
            await task
        async with db.write() as session:
            await session.execute(text("UPDATE tally SET n = n + 1"))
        assert await _count(db) == 1
    finally:
        await db.dispose()


async def test_a_writer_that_waited_for_its_turn_waits_for_sqlite_only_what_is_left(
    tmp_path: Path,
) -> None:
    # The whole wait stays within one busy timeout: not one for the turn, then one more for
    # another process's lock in SQLite's busy handler.
    db = await _database(tmp_path, busy_timeout_ms=2000)
    current: dict[int, int] = {}  # each connection's busy timeout, as last set
    begun: list[tuple[str, int]] = []
    label = "first"

    def seen(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("PRAGMA busy_timeout="):
            current[id(conn.connection.dbapi_connection)] = int(statement.split("=")[1])
        elif statement.startswith("BEGIN"):
            begun.append((label, current.get(id(conn.connection.dbapi_connection), 2000)))

    engine = db.write_engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    holding = asyncio.Event()

    async def hold() -> None:
        async with db.write() as session:
            await session.execute(text("UPDATE tally SET n = n + 1"))
            holding.set()
            await asyncio.sleep(0.5)

    async def after() -> None:
        nonlocal label
        await holding.wait()
        async with db.write() as session:  # waits at least 0.5 s for its turn
            await session.execute(text("UPDATE tally SET n = n + 1"))
        label = "uncontended"  # (in the same task: nothing of that wait is left behind)
        for _ in range(6):
            async with db.write() as session:
                await session.execute(text("UPDATE tally SET n = n + 1"))

    try:
        await asyncio.gather(hold(), after())
    finally:
        event.remove(engine, "before_cursor_execute", seen)
        await db.dispose()
    assert begun[0] == ("first", 2000)
    assert begun[1][0] == "first" and begun[1][1] <= 1500  # 2 s less the 0.5 s or more waited
    assert {budget for name, budget in begun[2:]} == {2000}  # each put back at once


async def test_a_task_started_inside_a_write_that_waited_keeps_the_whole_busy_timeout(
    tmp_path: Path,
) -> None:
    # A task copies its parent's context variables: it must not carry what was left of the
    # budget of the write it was started in into writes of its own.
    db = await _database(tmp_path, busy_timeout_ms=2000)
    timeouts: list[int] = []
    current: dict[int, int] = {}

    def seen(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        key = id(conn.connection.dbapi_connection)
        if statement.startswith("PRAGMA busy_timeout="):
            current[key] = int(statement.split("=")[1])
        elif statement.startswith("BEGIN"):
            timeouts.append(current.get(key, 2000))

    engine = db.write_engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    holding = asyncio.Event()
    children: list[asyncio.Task[None]] = []

    async def child() -> None:
        await asyncio.sleep(0.1)  # once its parent's write has ended
        async with db.write() as session:
            await session.execute(text("UPDATE tally SET n = n + 1"))

    async def hold() -> None:
        async with db.write() as session:
            await session.execute(text("UPDATE tally SET n = n + 1"))
            holding.set()
            await asyncio.sleep(0.5)

    async def parent() -> None:
        await holding.wait()
        async with db.write() as session:  # waited 0.5 s or more: a shortened budget
            await session.execute(text("UPDATE tally SET n = n + 1"))
            children.append(asyncio.create_task(child()))

    try:
        await asyncio.gather(hold(), parent())
        await asyncio.gather(*children)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
        await db.dispose()
    assert len(timeouts) == 3
    assert timeouts[1] <= 1500  # the parent's
    assert timeouts[2] == 2000  # the child's, its own
