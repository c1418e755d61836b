"""Read replicas: read-only queries of the request path go to a streaming replica, except the
caller's own reads right after its own writes.

After a write transaction of a caller commits, the primary's WAL position (pg_current_wal_lsn())
is noted against the caller. That caller's next replica read first asks the replica how far it
has replayed (pg_last_wal_replay_lsn()); in a REPEATABLE READ transaction that question takes
the snapshot the rest of the read sees, so when the replica is past the noted position the read
sees the write, and otherwise the read goes to the primary. Callers with no recent write never
wait for the primary at all.

The notes are kept by a WriteNotes (db/write_notes.py): in Redis when GLIMPSE_CACHE_URL names
one, shared by every API process, so that the caller's next request sees its write whichever
process it reaches; otherwise in this process's memory (route each user to one API process,
affinity on the bearer token or the session cookie, when that matters). Notes that cannot be
read (Redis down) send the read to the primary.

A replica that cannot be reached is left alone for a few seconds and its reads go to the
primary: a replica down costs load, never an error."""

from __future__ import annotations

import itertools
import logging
import time
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Executable, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from glimpse.db.write_notes import MemoryWriteNotes, Note, WriteNotes, lsn_number, lsn_text

log = logging.getLogger(__name__)

# The account the current request acts for (set once its token was found good).
_caller: ContextVar[int | None] = ContextVar("glimpse_db_caller", default=None)

# How long a replica that failed to connect is left alone.
DOWN_SECONDS = 5.0

_REPLAYED_PAST = text(
    "SELECT COALESCE(pg_last_wal_replay_lsn() >= CAST(CAST(:lsn AS text) AS pg_lsn), true)"
)
_CURRENT_POSITION = text("SELECT CAST(pg_current_wal_lsn() AS text)")


def act_as(user_id: int | None) -> None:
    """Make `user_id` the caller of the current request (and of what it awaits)."""
    _caller.set(user_id)


def current_caller() -> int | None:
    return _caller.get()


class Replicas:
    def __init__(self, urls: list[str], notes: WriteNotes | None = None) -> None:
        self.engines: list[AsyncEngine] = [
            create_async_engine(url, pool_pre_ping=True, isolation_level="REPEATABLE READ")
            for url in urls
        ]
        self._sessions = [
            async_sessionmaker(engine, expire_on_commit=False) for engine in self.engines
        ]
        # One statement for a caller with no write to wait for: no transaction around it.
        self._single = [e.execution_options(isolation_level="AUTOCOMMIT") for e in self.engines]
        self._turn = itertools.cycle(range(len(self.engines)))
        self._down_until = [0.0] * len(self.engines)
        self.notes: WriteNotes = notes if notes is not None else MemoryWriteNotes()

    async def note_write(self, session: AsyncSession) -> None:
        """After a commit on the primary: note where the WAL was for the current caller."""
        caller = _caller.get()
        if caller is None:
            return
        position: int | None
        try:
            position = lsn_number((await session.execute(_CURRENT_POSITION)).scalar_one())
        except (DBAPIError, OSError):
            log.warning("could not read the primary's WAL position", exc_info=True)
            position = None
        await self.notes.note(caller, position)

    async def open(self, at_least: str | None = None) -> AsyncSession | None:
        """A replica session in a transaction whose snapshot holds the current caller's own
        writes (and the WAL up to `at_least`, when given), or None: read the primary instead."""
        caller = _caller.get()
        noted: Note | None
        if at_least is not None:
            noted, caller = Note(lsn=lsn_number(at_least)), None
        else:
            noted = await self.notes.get(caller) if caller is not None else None
        if noted is not None and noted.lsn is None:
            return None  # pinned to the primary
        lsn = noted.lsn if noted is not None else None
        now = time.monotonic()
        for _ in range(len(self.engines)):
            index = next(self._turn)
            if self._down_until[index] > now:
                continue
            session = self._sessions[index]()
            try:
                await session.begin()
                if lsn is None:
                    # Take the snapshot now, so that a replica that is down shows here.
                    await session.execute(text("SELECT 1"))
                    return session
                caught_up = (await session.execute(_REPLAYED_PAST, {"lsn": lsn_text(lsn)})).scalar()
            except (OperationalError, DBAPIError, OSError):
                log.warning("replica %d is unreachable; reading the primary", index, exc_info=True)
                self._down_until[index] = now + DOWN_SECONDS
                await session.close()
                continue
            if caught_up:
                if caller is not None:
                    await self.notes.forget(caller, lsn)
                return session
            await session.close()
            return None  # lagging behind the caller's write: the primary has it
        return None

    async def fetch(
        self, statement: Executable, params: dict[str, Any]
    ) -> list[tuple[Any, ...]] | None:
        """The rows of one statement from a replica, when the current caller has no write
        the replica must hold first; None: read it another way (`open()`, or the primary)."""
        caller = _caller.get()
        if caller is not None and await self.notes.get(caller) is not None:
            return None
        now = time.monotonic()
        for _ in range(len(self.engines)):
            index = next(self._turn)
            if self._down_until[index] > now:
                continue
            try:
                async with self._single[index].connect() as connection:
                    return [tuple(row) for row in await connection.execute(statement, params)]
            except (OperationalError, DBAPIError, OSError):
                # Down, or a statement cancelled by a conflict with replay: the primary answers.
                log.warning("replica %d failed a read; reading the primary", index, exc_info=True)
                self._down_until[index] = now + DOWN_SECONDS
        return None

    async def fetch_each(
        self, statement: Executable, params: dict[str, Any]
    ) -> list[list[tuple[Any, ...]]] | None:
        """The rows of one statement from every replica, one list each (feed/kept_pages.py
        takes the lowest of what they say); None when any of them cannot answer now."""
        now = time.monotonic()
        if any(until > now for until in self._down_until):
            return None
        results: list[list[tuple[Any, ...]]] = []
        for index in range(len(self.engines)):
            try:
                async with self._single[index].connect() as connection:
                    rows = await connection.execute(statement, params)
                    results.append([tuple(row) for row in rows])
            except (OperationalError, DBAPIError, OSError):
                log.warning("replica %d failed a read; reading the primary", index, exc_info=True)
                self._down_until[index] = now + DOWN_SECONDS
                return None
        return results

    async def check(self, index: int) -> None:
        """A round trip to replica `index` (for /readyz); raises when it does not answer."""
        async with self.engines[index].connect() as connection:
            await connection.execute(text("SELECT pg_is_in_recovery()"))

    async def primary_position(self, session: AsyncSession) -> str:
        return str((await session.execute(_CURRENT_POSITION)).scalar_one())

    async def dispose(self) -> None:
        for engine in self.engines:
            await engine.dispose()
        await self.notes.close()
