"""Which database errors are the server's connection failing rather than the statement.

A PostgreSQL server that ends a session (`pg_terminate_backend`, a restart, a failover, a
network cut) makes the statement in flight fail with asyncpg's own exception, which SQLAlchemy
wraps as a plain DBAPIError (not an OperationalError) and does not always mark as a disconnect;
rolling back on the dead connection then fails again with asyncpg's "another operation is in
progress", which SQLAlchemy wraps as an InternalError. In each case the transaction did not
commit (unless the cut came during COMMIT itself, when, as after any network cut, the client
cannot know), so the request may be sent again: the API answers 503 with Retry-After (api/
errors.py), as it does for a busy SQLite file.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

T = TypeVar("T")
log = logging.getLogger(__name__)

# Errors that say the session, not the statement, failed.
_SESSION_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
# asyncpg's errors (a driver of the `postgres` extra only) of a connection used again after it
# broke (its protocol still waiting for the answer that never came) or after it was closed.
_CLIENT_ERRORS: tuple[type[BaseException], ...] = ()
# PostgreSQL's own "this transaction was rolled back; run it again" (class 40: a deadlock
# detected between two transactions, a serialization failure).
_ROLLED_BACK: tuple[type[BaseException], ...] = ()
try:
    import asyncpg.exceptions as pg
except ImportError:  # (no PostgreSQL without it: SQLite's errors are OperationalErrors)
    pass
else:
    # The connection's own (class 08: it does not exist, it failed, it was refused), an
    # operator's intervention (class 57: admin shutdown, crash shutdown, cannot connect now, a
    # cancelled statement), and the server's resources (class 53: too many connections, out of
    # memory, disk full).
    _SESSION_ERRORS += (
        pg.PostgresConnectionError,
        pg.OperatorInterventionError,
        pg.InsufficientResourcesError,
    )
    _CLIENT_ERRORS = (pg.InterfaceError, pg.InternalClientError)
    _ROLLED_BACK = (pg.TransactionRollbackError,)
_BROKEN_CONNECTION_TEXT = ("another operation", "connection is closed")


# SQLITE_BUSY and SQLITE_LOCKED: another writer held on past the busy timeout.
_SQLITE_BUSY_CODES = {5, 6}
# SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN: the disk under the database is
# full, read-only, failing or out of file descriptors. The server's trouble, which an operator
# fixes without a new release. (PostgreSQL's own disk full is class 53, a session error above.)
_SQLITE_DISK_CODES = {8, 10, 13, 14}
# SQLITE_CORRUPT and SQLITE_NOTADB: a disk that fails reads hands SQLite short or zeroed pages,
# which it reports as a malformed file (a plain DatabaseError, not an OperationalError) while
# the file itself is whole; a file really damaged is the operator's to restore. The server's
# trouble either way, but no passing outage to wait out at start-up (waiting_out_outages).
_SQLITE_UNREADABLE_CODES = {11, 26}


def sqlite_primary_code(exc: DBAPIError) -> int | None:
    code = getattr(exc.orig, "sqlite_errorcode", None)
    # Extended codes (SQLITE_IOERR_FSYNC, SQLITE_READONLY_DBMOVED...) keep the primary one in
    # their low byte.
    return code & 0xFF if isinstance(code, int) else None


def disk_at_fault(exc: DBAPIError) -> bool:
    """Whether an embedded database failed for its disk (full, read-only, failing), not for the
    statement."""
    return isinstance(exc, OperationalError) and sqlite_primary_code(exc) in _SQLITE_DISK_CODES


def file_unreadable(exc: DBAPIError) -> bool:
    """Whether an embedded database's file read as damaged: a disk failing reads, or a file
    that really is (not the statement's fault either way)."""
    return sqlite_primary_code(exc) in _SQLITE_UNREADABLE_CODES


def try_again_soon(exc: DBAPIError) -> bool:
    """Whether the database was busy (SQLite's write lock held past the busy timeout), ended
    the transaction for another's sake (a deadlock), or went away (connection_lost): the
    transaction rolled back, and the same work may simply be done again in a moment. (A broken
    schema or a full disk is neither.)"""
    if isinstance(exc, OperationalError) and sqlite_primary_code(exc) in _SQLITE_BUSY_CODES:
        return True
    if _rolled_back(exc):
        # Two transactions took the same rows in opposite orders (say, a user liking a post
        # of theirs while deleting it: each moves the feed marks of migration 0013), and
        # PostgreSQL ended one of them.
        return True
    return connection_lost(exc)


def _rolled_back(exc: DBAPIError) -> bool:
    # SQLAlchemy's asyncpg adapter raises its own error from asyncpg's, keeping the SQLSTATE.
    for cause in (exc.orig, getattr(exc.orig, "__cause__", None)):
        if isinstance(cause, _ROLLED_BACK) or str(getattr(cause, "sqlstate", "")).startswith("40"):
            return True
    return False


def connection_lost(exc: BaseException) -> bool:
    """Whether `exc` (a SQLAlchemy error, or one it caused) says the database connection failed
    or the server cannot serve now, rather than the statement being wrong."""
    seen: set[int] = set()
    current: BaseException | None = exc
    pending: list[BaseException] = []
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _SESSION_ERRORS):
            return True
        if isinstance(current, _CLIENT_ERRORS) and any(
            text in str(current) for text in _BROKEN_CONNECTION_TEXT
        ):
            return True
        orig = getattr(current, "orig", None)
        for linked in (orig, current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                pending.append(linked)
        current = pending.pop() if pending else None
    return False


async def read_once_more_if_lost(read: Callable[[], Awaitable[T]]) -> T:
    """Run `read`, and once more if the connection was lost under it.

    Only for a read that runs alone on its connection (Database.fetch): it changed nothing, so
    running it again is safe, and the pool's pre-ping hands the second try a live connection
    (the dead one is discarded on its way back). A write cannot be replayed this way: its
    block ran code around the statements, and a cut during COMMIT leaves its outcome unknown,
    so it stays a 503 with Retry-After."""
    try:
        return await read()
    except DBAPIError as exc:
        if not connection_lost(exc):
            raise
        log.warning("database connection lost under a read; reading once more: %s", exc.orig)
    return await read()


async def waiting_out_outages(
    action: Callable[[], Awaitable[T]],
    what: str,
    seconds: float,
    after_disk_fault: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """Run `action`, again and again with backoff for up to `seconds` while the database is busy
    or not answering (try_again_soon), or its disk cannot be written (disk_at_fault). For a
    process's start-up steps: on a loaded machine an embedded database's write lock can be held
    past its busy timeout, a PostgreSQL session can be ended under the first statement (a
    failover, a restart still under way), and a worker can be (re)started while the data disk
    is full; a process must not die of any of these. Anything else, or an outage that lasts,
    is raised. `after_disk_fault` runs before the next try after a disk fault: SQLite opens a
    file it cannot write read-only, and such a connection stays so, and lends its file to the
    process's next ones, after the disk is back (Database.dispose closes them all)."""
    deadline = time.monotonic() + seconds
    delay = 0.25
    while True:
        try:
            return await action()
        except DBAPIError as exc:
            if time.monotonic() + delay > deadline:
                raise
            if disk_at_fault(exc):
                log.warning("the database cannot be written %s; waiting: %s", what, exc.orig)
                if after_disk_fault is not None:
                    await after_disk_fault()
            elif try_again_soon(exc):
                log.warning("the database is busy or not answering %s; waiting: %s", what, exc)
            else:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
