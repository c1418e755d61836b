"""db/failures.connection_lost: which database errors are the connection failing (503, try
again) rather than the statement being wrong (a bug: 500); and the lone read tried once more.
try_again_soon: also a transaction PostgreSQL rolled back for another's sake (SQLSTATE class
40); waiting_out_outages: a process's start-up steps wait those out, and an embedded database's
disk that cannot be written (disk_at_fault), and nothing else."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import cast

import asyncpg.exceptions as pg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, InternalError, OperationalError

from glimpse.container import Container
from glimpse.db.failures import (
    connection_lost,
    disk_at_fault,
    read_once_more_if_lost,
    try_again_soon,
    waiting_out_outages,
)
from glimpse.worker import check_registered_handlers


def wrapped(orig: BaseException, kind: type[DBAPIError] = DBAPIError, **kw: bool) -> DBAPIError:
    """As SQLAlchemy raises a driver's error: the driver's error as `orig` and as the cause."""
    error = kind("SELECT 1", (), orig, **kw)
    error.__cause__ = orig
    return error


def test_a_server_that_ended_the_session_is_a_lost_connection() -> None:
    for orig in (
        pg.AdminShutdownError("terminating connection due to administrator command"),
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        pg.CannotConnectNowError("the database system is starting up"),
        pg.TooManyConnectionsError("sorry, too many clients already"),
        ConnectionResetError(104, "Connection reset by peer"),
    ):
        assert connection_lost(wrapped(orig)), orig


def test_the_driver_error_is_found_down_the_chain() -> None:
    # asyncpg's ConnectionDoesNotExistError caused by AdminShutdownError, wrapped by SQLAlchemy
    # in an error whose `orig` is the adapter's own exception.
    shutdown = pg.AdminShutdownError("terminating connection due to administrator command")
    gone = pg.ConnectionDoesNotExistError("connection was closed in the middle of operation")
    gone.__cause__ = shutdown
    adapter = RuntimeError("connection was closed in the middle of operation")
    adapter.__cause__ = gone
    assert connection_lost(wrapped(adapter))


def test_a_rollback_on_the_dead_connection_is_a_lost_connection() -> None:
    busy = pg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")
    assert connection_lost(wrapped(busy, InternalError))


def test_an_invalidated_connection_is_a_lost_connection() -> None:
    assert connection_lost(wrapped(RuntimeError("anything"), connection_invalidated=True))


def test_a_wrong_statement_is_not() -> None:
    unique = pg.UniqueViolationError("duplicate key value violates unique constraint")
    assert not connection_lost(wrapped(unique, IntegrityError))
    assert not connection_lost(wrapped(pg.InterfaceError("the server expects 2 arguments")))
    assert not connection_lost(wrapped(pg.UndefinedTableError('relation "x" does not exist')))
    assert not connection_lost(ValueError("not a database error"))


def test_a_cycle_in_the_chain_ends() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert not connection_lost(wrapped(a))


def reads(*outcomes: BaseException | str) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    """A read that raises or returns each outcome in turn, and how often it was called."""
    calls: list[int] = []

    async def read() -> str:
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return calls, read


async def test_a_read_cut_under_it_is_read_once_more() -> None:
    lost = wrapped(pg.ConnectionDoesNotExistError("connection was closed in the middle"))
    calls, read = reads(lost, "rows")
    assert await read_once_more_if_lost(read) == "rows"
    assert len(calls) == 2


async def test_a_read_cut_twice_or_a_wrong_statement_is_not_read_again() -> None:
    lost = wrapped(pg.ConnectionDoesNotExistError("connection was closed in the middle"))
    calls, read = reads(lost, lost, "rows")
    with pytest.raises(DBAPIError):
        await read_once_more_if_lost(read)
    assert len(calls) == 2
    wrong = wrapped(pg.UndefinedColumnError("column x does not exist"))
    calls, read = reads(wrong, "rows")
    with pytest.raises(DBAPIError):
        await read_once_more_if_lost(read)
    assert len(calls) == 1


class AdapterError(Exception):
    """As SQLAlchemy's asyncpg adapter raises: its own error, the SQLSTATE copied onto it."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        if sqlstate is not None:
            self.sqlstate = sqlstate


def test_a_transaction_postgresql_ended_for_another_is_tried_again() -> None:
    deadlock = pg.DeadlockDetectedError("deadlock detected")
    serialization = pg.SerializationError("could not serialize access")
    adapted = AdapterError("deadlock detected")  # (no SQLSTATE of its own: the cause tells)
    adapted.__cause__ = deadlock
    for error in (
        wrapped(deadlock),
        wrapped(serialization),
        wrapped(adapted),
        wrapped(AdapterError("deadlock detected", sqlstate="40P01")),  # the SQLSTATE alone
        wrapped(AdapterError("could not serialize access", sqlstate="40001")),
    ):
        assert try_again_soon(error), error.orig


def test_a_wrong_statement_is_not_tried_again() -> None:
    undefined = pg.UndefinedTableError('relation "x" does not exist')
    adapted = AdapterError('relation "x" does not exist')
    adapted.__cause__ = undefined
    for error in (
        wrapped(undefined),
        wrapped(adapted),
        wrapped(AdapterError('relation "x" does not exist', sqlstate="42P01")),
        wrapped(AdapterError("division by zero", sqlstate="22012")),
        wrapped(pg.UniqueViolationError("duplicate key value"), IntegrityError),
    ):
        assert not try_again_soon(error), error.orig


def actions(*outcomes: BaseException | str) -> tuple[list[float], Callable[[], Awaitable[str]]]:
    """An action that raises or returns each outcome in turn, and when it was called."""
    calls: list[float] = []

    async def action() -> str:
        calls.append(time.monotonic())
        outcome = outcomes[len(calls) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return calls, action


async def test_an_outage_at_start_is_waited_out() -> None:
    lost = wrapped(pg.ConnectionDoesNotExistError("connection was closed in the middle"))
    deadlock = wrapped(pg.DeadlockDetectedError("deadlock detected"))
    calls, action = actions(lost, deadlock, "started")
    assert await waiting_out_outages(action, "at start-up", 30) == "started"
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.2  # after a pause, not at once


def sqlite_error(message: str, code: int) -> DBAPIError:
    orig = sqlite3.OperationalError(message)
    orig.sqlite_errorcode = code
    return wrapped(orig, OperationalError)


async def test_a_full_or_read_only_disk_at_start_is_waited_out_but_is_no_busy_database() -> None:
    full = sqlite_error("database or disk is full", 13)  # SQLITE_FULL
    read_only = sqlite_error("attempt to write a readonly database", 8 | 1 << 8)  # ..._RECOVERY
    assert disk_at_fault(full) and disk_at_fault(read_only)
    # Not "send it again in a second" (api/errors.py answers storage_unavailable for these).
    assert not try_again_soon(full) and not try_again_soon(read_only)
    calls, action = actions(full, read_only, "started")
    resets: list[int] = []

    async def reset() -> None:  # (the container closes every connection: Database.dispose)
        resets.append(len(calls))

    assert await waiting_out_outages(action, "at start-up", 30, reset) == "started"
    assert len(calls) == 3
    assert resets == [1, 2]  # after each disk fault, before the next try
    lost = wrapped(pg.ConnectionDoesNotExistError("connection was closed in the middle"))
    calls, action = actions(lost, "started")
    assert await waiting_out_outages(action, "at start-up", 30, reset) == "started"
    assert resets == [1, 2]  # (not after an outage of another kind)
    calls, action = actions(*[full] * 10)
    with pytest.raises(OperationalError):
        await waiting_out_outages(action, "at start-up", 0.5)
    assert len(calls) == 2
    malformed = sqlite_error("database disk image is malformed", 11)  # SQLITE_CORRUPT
    assert not disk_at_fault(malformed)
    calls, action = actions(malformed, "started")
    with pytest.raises(OperationalError):
        await waiting_out_outages(action, "at start-up", 30)
    assert len(calls) == 1


async def test_a_wrong_statement_or_an_outage_that_lasts_is_raised_at_start() -> None:
    wrong = wrapped(pg.UndefinedTableError('relation "jobs" does not exist'))
    calls, action = actions(wrong, "started")
    with pytest.raises(DBAPIError):
        await waiting_out_outages(action, "at start-up", 30)
    assert len(calls) == 1
    lost = wrapped(pg.ConnectionDoesNotExistError("connection was closed in the middle"))
    calls, action = actions(*[lost] * 10)
    with pytest.raises(DBAPIError):
        await waiting_out_outages(action, "at start-up", 0.5)
    assert len(calls) == 2  # (waited 0.25 s; another 0.5 s would pass the deadline)


async def test_a_worker_whose_start_up_check_meets_an_outage_waits_it_out() -> None:
    """worker.check_registered_handlers (a real server's session ended under it:
    tests/integration/test_worker_start.py)."""
    lost = wrapped(pg.ConnectionDoesNotExistError("connection was closed in the middle"))
    calls, pending = actions(lost, "unused")

    async def pending_names() -> set[str]:
        await pending()
        return set()

    container = cast(Container, SimpleNamespace(queue=SimpleNamespace(pending_names=pending_names)))
    await check_registered_handlers(container)
    assert len(calls) == 2
