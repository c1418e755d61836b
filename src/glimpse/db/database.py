"""Engines and transactions. Routes and jobs own their transaction through `read()` / `write()`.

On SQLite several processes (the API and its workers) share one file, so: WAL, a busy timeout,
and write transactions opened with BEGIN IMMEDIATE. A deferred transaction that reads first and
upgrades to a write later fails with "database is locked" at once instead of waiting its turn.
`synchronous=FULL` (the default; GLIMPSE_DATABASE_SYNCHRONOUS) syncs the WAL at every commit, so an
answered request survives a power cut as well as a crash; on this machine's disk that costs about
0.3 ms a commit. NORMAL survives a process crash but may lose the last commits on power loss.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Executable, event, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from glimpse.db.failures import read_once_more_if_lost
from glimpse.db.migrate import current_revision
from glimpse.db.replicas import Replicas
from glimpse.db.urls import async_database_url
from glimpse.db.write_notes import WriteNotes
from glimpse.db.write_turns import WriteTurns


def _sqlite_datetime(value: datetime) -> str:
    # As SQLAlchemy's SQLite DateTime stores it (db/base.UTCDateTime hands it UTC), so that
    # the text compares in time order with what is stored.
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# Of a write transaction that waited for its turn: what is left of the busy timeout, in ms.
_BUSY_BUDGET_MS: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "glimpse_busy_budget_ms", default=None
)
# A wait for a turn shorter than this share of the busy timeout leaves SQLite's own wait as it
# is (no statement to change it), so that an uncontended write costs nothing more.
_BUDGET_SLACK = 0.1

# Each quick connection's number, process-wide (Database.version).
_QUICK_GENERATIONS = itertools.count(1)

# Positional "?" parameters, as the sqlite3 module takes them.
_QMARK_SQLITE = sqlite.dialect(paramstyle="qmark")

# The quick connection reads the database file through a memory map of up to this much (SQLite
# caps it at its build's limit, 2 GB in the usual builds): a page is then a pointer into the
# OS page cache rather than a read() into SQLite's own cache of 2,000 pages, which a large file
# misses all the time, and which any other process's commit empties. A hot-path statement over
# 64 posts costs a quarter to a third less CPU (bench/bench_feed.py). Pages still in the WAL are
# read as before. (The price: an I/O error on the disk under a mapped page is a SIGBUS rather
# than an error code, which an attack through a disk failing reads saw end the API process; the
# same is already true of the WAL's index, which SQLite always maps. GLIMPSE_DATABASE_MMAP_BYTES
# = 0 reads without the map.)
QUICK_MMAP_BYTES = 2**31


def use_wal(dbapi_connection: Any) -> None:
    """Put the file in WAL mode (a persistent property of the file) unless it already is.

    Switching needs an exclusive lock, and two connections switching at once deadlock: SQLite then
    answers "database is locked" without waiting. Migrations switch the file before any process
    shares it, so an open only reads the mode; the switch here covers a file made some other way.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode")
        (mode,) = cursor.fetchone()
        if str(mode).lower() != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def _configure_sqlite(
    engine: AsyncEngine,
    begin_statement: str,
    busy_timeout_ms: int,
    synchronous: str,
    budgeted: bool = False,
) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver so that we choose DEFERRED or IMMEDIATE ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        use_wal(dbapi_connection)

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Any) -> None:
        # What is left of the busy timeout once the transaction's turn came (Database.write):
        # the whole wait for the lock stays within one busy timeout, not one for the turn and
        # another for SQLite's lock. (The setting is the connection's: put back at its next
        # transaction.)
        wanted = (_BUSY_BUDGET_MS.get() if budgeted else None) or busy_timeout_ms
        if conn.info.get("busy_timeout_ms", busy_timeout_ms) != wanted:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={int(wanted)}")
            conn.info["busy_timeout_ms"] = wanted
        conn.exec_driver_sql(begin_statement)


class Database:
    def __init__(
        self,
        url: str,
        *,
        busy_timeout_ms: int = 5000,
        synchronous: str = "FULL",
        mmap_bytes: int = QUICK_MMAP_BYTES,
        replica_urls: list[str] | None = None,
        replica_notes: WriteNotes | None = None,
    ) -> None:
        url = async_database_url(url)
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.write_engine = create_async_engine(url)
            self.read_engine = create_async_engine(url)
            if synchronous not in ("FULL", "NORMAL"):
                raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
            _configure_sqlite(
                self.write_engine, "BEGIN IMMEDIATE", busy_timeout_ms, synchronous, budgeted=True
            )
            _configure_sqlite(self.read_engine, "BEGIN", busy_timeout_ms, synchronous)
        else:
            self.write_engine = create_async_engine(url, pool_pre_ping=True)
            # One snapshot per read transaction, as on SQLite (READ COMMITTED would take one
            # per statement); a read-only transaction never fails to serialise.
            self.read_engine = self.write_engine.execution_options(
                isolation_level="REPEATABLE READ"
            )
        # fetch() runs one statement: on PostgreSQL without BEGIN and COMMIT around it (a
        # statement is its own snapshot), two round trips fewer on the hot path.
        self._single_statements = self.write_engine.execution_options(isolation_level="AUTOCOMMIT")
        # Only PostgreSQL streams to replicas; on SQLite there are none to read.
        self.replicas = (
            Replicas([async_database_url(u) for u in replica_urls], replica_notes)
            if replica_urls and not self.is_sqlite
            else None
        )
        self._write_sessions = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)
        self._sqlite_path = parsed.database if self.is_sqlite else None
        self._busy_timeout_ms = busy_timeout_ms
        self._mmap_bytes = int(mmap_bytes)
        self._quick: threading.local = threading.local()
        # This process's SQLite writers, in line (db/write_turns.py): one line per event loop.
        self._write_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteTurns] = (
            weakref.WeakKeyDictionary()
        )
        # Hot-path statements, compiled for the quick connection once (they are module-level
        # constants, so the statement object itself is kept to make its id() safe to key by).
        self._statements: dict[int, tuple[Executable, str, list[str], dict[str, Any]]] = {}

    async def fetch(
        self,
        statement: Executable,
        params: Mapping[str, Any] | None = None,
        *,
        replica: bool = False,
        at_least: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """The rows of one read statement of a hot path, as a snapshot of its own.

        On SQLite it runs right here, on the event loop, on a read-only connection of this
        thread's: an indexed read of pages in the page cache takes microseconds, where the hop
        to aiosqlite's thread and back, and the session around it, cost hundreds (measured in
        bench/bench_feed.py). A WAL reader never waits for writers, so the loop is not held
        behind another process's transaction. The statement is compiled once per process.
        Elsewhere it is a read transaction like `read()` (on a replica if `replica`). Errors
        are SQLAlchemy's, as from a session, so the API maps them the same way."""
        params = params or {}
        if self._sqlite_path is None:
            if replica and self.replicas is not None:
                if at_least is None:
                    rows = await self.replicas.fetch(statement, dict(params))
                    if rows is not None:
                        return rows
                async with self.read(replica=replica, at_least=at_least) as session:
                    return [tuple(row) for row in await session.execute(statement, dict(params))]

            async def read() -> list[tuple[Any, ...]]:
                async with self._single_statements.connect() as single:
                    return [tuple(row) for row in await single.execute(statement, dict(params))]

            # A server that ended the connection under this lone read: read again (failures.py).
            return await read_once_more_if_lost(read)
        sql, names, defaults = self._compiled(statement)
        values: list[Any] = []
        for name in names:
            value = params[name] if name in params else defaults[name]
            if isinstance(value, list | tuple):
                # An expanding IN: one placeholder per value, as SQLAlchemy renders it.
                sql = sql.replace(
                    f"__[POSTCOMPILE_{name}]", ", ".join("?" * len(value)) or "NULL", 1
                )
                values.extend(value)
            elif isinstance(value, datetime):
                values.append(_sqlite_datetime(value))
            else:
                values.append(value)
        connection = self._quick_connection()
        try:
            return connection.execute(sql, values).fetchall()
        except sqlite3.OperationalError as exc:
            raise OperationalError(sql, values, exc) from exc
        except sqlite3.Error as exc:
            raise DatabaseError(sql, values, exc) from exc

    def version(self) -> tuple[int, int] | None:
        """On SQLite, a value that stays the same for exactly as long as nothing is committed
        to the database, by any connection of any process (this one's writes included): the
        `PRAGMA data_version` of this thread's quick connection (2 µs, no statement of the
        schema's), with that connection's generation, since a new connection counts anew.
        What was read after a version was taken still holds while the version is the same
        (kept feed pages, feed/kept_pages.py; tokens, accounts/token_memo.py). None elsewhere, or
        when it cannot be read."""
        if self._sqlite_path is None:
            return None
        try:
            connection = self._quick_connection()
            return self._quick.generation, connection.execute("PRAGMA data_version").fetchone()[0]
        except (sqlite3.Error, OperationalError):
            return None

    def _compiled(self, statement: Executable) -> tuple[str, list[str], dict[str, Any]]:
        cached = self._statements.get(id(statement))
        if cached is None or cached[0] is not statement:
            compiled = statement.compile(dialect=_QMARK_SQLITE)  # type: ignore[attr-defined]
            # (params: the values the statement itself holds, such as a status literal)
            cached = (statement, compiled.string, list(compiled.positiontup or ()), compiled.params)
            self._statements[id(statement)] = cached
        return cached[1], cached[2], cached[3]

    def _quick_connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._quick, "connection", None)
        if connection is None:
            assert self._sqlite_path is not None
            try:
                connection = sqlite3.connect(
                    self._sqlite_path,
                    isolation_level=None,  # autocommit: each statement its own snapshot
                    check_same_thread=True,
                    timeout=self._busy_timeout_ms / 1000,
                )
                connection.execute("PRAGMA query_only=ON")
                connection.execute(f"PRAGMA mmap_size={self._mmap_bytes}")
            except sqlite3.OperationalError as exc:
                raise OperationalError("connect", (), exc) from exc
            self._quick.connection = connection
            self._quick.generation = next(_QUICK_GENERATIONS)
        return connection

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: committed when the block ends, rolled back if it raises.
        Keep it short: never hold it across image work or other slow I/O.

        On SQLite, this process's write transactions take turns first (db/write_turns.py), so
        that each begins as the one before ends, in the order they came; a turn waited for
        past the busy timeout is refused as SQLite would refuse it."""
        if not self.is_sqlite:
            async with self._write_sessions() as session:
                async with session.begin():
                    yield session
                if self.replicas is not None:
                    await self.replicas.note_write(session)
            return
        loop = asyncio.get_running_loop()
        turns = self._write_turns.get(loop) or self._write_turns.setdefault(loop, WriteTurns())
        asked = loop.time()
        await turns.take(self._busy_timeout_ms / 1000)
        waited_ms = (loop.time() - asked) * 1000
        # Set either way: a task started inside another write that waited must not inherit
        # what was left of that one's budget.
        budget = _BUSY_BUDGET_MS.set(
            max(1, int(self._busy_timeout_ms - waited_ms))
            if waited_ms > self._busy_timeout_ms * _BUDGET_SLACK
            else None
        )
        try:
            async with self._write_sessions() as session, session.begin():
                yield session
        finally:
            turns.give_back()
            _BUSY_BUDGET_MS.reset(budget)

    @asynccontextmanager
    async def read(
        self, *, replica: bool = False, at_least: str | None = None
    ) -> AsyncIterator[AsyncSession]:
        """A read transaction: one consistent snapshot. (Ending it with COMMIT writes nothing and,
        unlike ROLLBACK, keeps the loaded objects usable after the block.)

        `replica`: the read may be served by a read replica (db/replicas.py), which still holds
        the caller's own writes; for read-only paths of requests, never for a read that a write
        decides on. `at_least`: a primary_position() the replica must have replayed."""
        if replica and self.replicas is not None:
            session = await self.replicas.open(at_least)
            if session is not None:
                async with session:
                    yield session
                    await session.commit()
                return
        async with self._read_sessions() as session, session.begin():
            yield session

    async def primary_position(self) -> str | None:
        """Where the primary's WAL is now, for a replica read that must see everything committed
        so far (`read(replica=True, at_least=...)`); None without replicas."""
        if self.replicas is None:
            return None
        async with self._write_sessions() as session:
            return await self.replicas.primary_position(session)

    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (a real round trip, for /readyz)."""
        async with self.read_engine.connect() as connection:
            return await connection.run_sync(current_revision)

    async def check_write(self) -> None:
        """A real write transaction (for /readyz): a database that still answers reads but can
        no longer be written (a read-only or full disk, a replica promoted the wrong way round,
        a lost write lock) cannot take a post, so it is not ready. Alembic's own row is
        rewritten with its own value: a write every deployment has, that changes nothing."""
        async with self.write() as session:
            result = await session.execute(
                text("UPDATE alembic_version SET version_num = version_num")
            )
            if getattr(result, "rowcount", 1) != 1:
                raise RuntimeError("the schema's version row is missing")

    async def dispose(self) -> None:
        connection = getattr(self._quick, "connection", None)
        if connection is not None:
            connection.close()
            self._quick.connection = None
        await self.write_engine.dispose()
        if self.read_engine.sync_engine.pool is not self.write_engine.sync_engine.pool:
            await self.read_engine.dispose()
        if self.replicas is not None:
            await self.replicas.dispose()
