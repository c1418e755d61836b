"""Read replicas: read-only queries of the request path go to a streaming replica, except the
caller's own reads right after its own writes.

After a write transaction of a caller commits, the primary's WAL position (pg_current_wal_lsn())
is noted against the caller. That caller's next replica read first asks the replica how far it
has replayed (pg_last_wal_replay_lsn()); in a REPEATABLE READ transaction that question takes
the snapshot the rest of the read sees, so when the replica is past the noted position the read
sees the write, and otherwise the read goes to the primary. Callers with no recent write never
wait for the primary at all.

The note lives in this process's memory: behind a load balancer without session affinity, a
caller's next request may reach another API process that does not know of the write (it then
reads the replica, which may lag). Route each user to one API process (affinity on the bearer
token or the session cookie) when that matters.

A replica that cannot be reached is left alone for a few seconds and its reads go to the
primary: a replica down costs load, never an error."""

from __future__ import annotations

import itertools
import logging
import time
from collections import OrderedDict
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

log = logging.getLogger(__name__)

# The account the current request acts for (set once its token was found good).
_caller: ContextVar[int | None] = ContextVar("glimpse_db_caller", default=None)

# How many callers' last writes are remembered; the oldest are forgotten first.
MAX_NOTED_CALLERS = 100_000
# When the WAL position of a write could not be read: its caller reads the primary this long.
UNKNOWN_POSITION_SECONDS = 30.0
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
    def __init__(self, urls: list[str]) -> None:
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
        # caller -> (WAL position of its last write, or None if unknown; when it was noted)
        self._written: OrderedDict[int, tuple[str | None, float]] = OrderedDict()

    async def note_write(self, session: AsyncSession) -> None:
        """After a commit on the primary: remember where the WAL was for the current caller."""
        caller = _caller.get()
        if caller is None:
            return
        position: str | None
        try:
            position = (await session.execute(_CURRENT_POSITION)).scalar_one()
        except (DBAPIError, OSError):
            log.warning("could not read the primary's WAL position", exc_info=True)
            position = None
        self._written.pop(caller, None)
        self._written[caller] = (position, time.monotonic())
        while len(self._written) > MAX_NOTED_CALLERS:
            self._written.popitem(last=False)

    async def open(self, at_least: str | None = None) -> AsyncSession | None:
        """A replica session in a transaction whose snapshot holds the current caller's own
        writes (and the WAL up to `at_least`, when given), or None: read the primary instead."""
        caller = _caller.get()
        noted = self._written.get(caller) if caller is not None else None
        if at_least is not None:
            noted = (at_least, time.monotonic())
            caller = None
        if noted is not None and noted[0] is None:
            if time.monotonic() - noted[1] < UNKNOWN_POSITION_SECONDS:
                return None
            self._written.pop(caller, None)  # type: ignore[arg-type]
            noted = None
        now = time.monotonic()
        for _ in range(len(self.engines)):
            index = next(self._turn)
            if self._down_until[index] > now:
                continue
            session = self._sessions[index]()
            try:
                await session.begin()
                if noted is None:
                    # Take the snapshot now, so that a replica that is down shows here.
                    await session.execute(text("SELECT 1"))
                    return session
                caught_up = (await session.execute(_REPLAYED_PAST, {"lsn": noted[0]})).scalar()
            except (OperationalError, DBAPIError, OSError):
                log.warning("replica %d is unreachable; reading the primary", index, exc_info=True)
                self._down_until[index] = now + DOWN_SECONDS
                await session.close()
                continue
            if caught_up:
                if caller is not None and self._written.get(caller) == noted:
                    self._written.pop(caller, None)
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
        if caller is not None and caller in self._written:
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

    async def check(self, index: int) -> None:
        """A round trip to replica `index` (for /readyz); raises when it does not answer."""
        async with self.engines[index].connect() as connection:
            await connection.execute(text("SELECT pg_is_in_recovery()"))

    async def primary_position(self, session: AsyncSession) -> str:
        return str((await session.execute(_CURRENT_POSITION)).scalar_one())

    async def dispose(self) -> None:
        for engine in self.engines:
            await engine.dispose()
