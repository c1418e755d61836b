"""db/failures.connection_lost: which database errors are the connection failing (503, try
again) rather than the statement being wrong (a bug: 500); and the lone read tried once more."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg.exceptions as pg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, InternalError

from glimpse.db.failures import connection_lost, read_once_more_if_lost


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
