"""One SQLite write transaction at a time in this process, first come, first served.

SQLite lets one connection write at a time. A connection that finds the write lock taken waits
in SQLite's busy handler, which sleeps and looks again, at growing intervals of up to 100 ms,
with no queue: a transaction that has waited long can keep losing the lock to newer ones. Eight
likes sent at once to one process had a p99 of 0.5-1.2 s, against 10 ms for their median
(bench/bench_likes.py). So a process's own transactions wait their turn here, in order, and each
takes the lock the moment the one before ends; only other processes' writers (the workers) are
left to the busy handler.

A wait is bounded like the busy handler's: past it, the transaction is refused as "database is
locked" (the same OperationalError, so the same 503 and Retry-After, db/failures.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import deque

from sqlalchemy.exc import OperationalError

# SQLite's result code for a write lock held past the busy timeout.
_SQLITE_BUSY = 5


class WriteTurns:
    """A first-come-first-served lock with a bounded wait, for one event loop. (Not an
    asyncio.Lock under asyncio.timeout: on Python 3.11 a timeout that expires in the loop turn
    the lock is granted leaves the task cancelled, while it holds the lock.)"""

    def __init__(self) -> None:
        self._held = False
        self._waiting: deque[asyncio.Future[bool]] = deque()

    async def take(self, seconds: float) -> None:
        """Wait for this process's turn to write, for at most `seconds`; raises the busy
        OperationalError past that. The caller must `give_back()` once its transaction ends."""
        if not self._held and not self._waiting:
            self._held = True
            return
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[bool] = loop.create_future()
        self._waiting.append(turn)
        timer = loop.call_later(max(0.0, seconds), _refuse, turn)
        try:
            granted = await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.result():
                self.give_back()  # handed over just as the waiter was cancelled: pass it on
            else:
                self._forget(turn)
            raise
        finally:
            timer.cancel()
        if not granted:
            self._forget(turn)
            raise _busy()

    def give_back(self) -> None:
        """End this turn: the longest waiting transaction takes the next at once."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(True)  # (held stays True: handed over, never free between)
                return
        self._held = False

    @property
    def waiting(self) -> int:
        return sum(not turn.done() for turn in self._waiting)

    def _forget(self, turn: asyncio.Future[bool]) -> None:
        with contextlib.suppress(ValueError):  # (already handed a turn and taken off)
            self._waiting.remove(turn)


def _refuse(turn: asyncio.Future[bool]) -> None:
    if not turn.done():
        turn.set_result(False)


def _busy() -> OperationalError:
    orig = sqlite3.OperationalError("database is locked (this process's writers waited too long)")
    orig.sqlite_errorcode = _SQLITE_BUSY
    return OperationalError("BEGIN IMMEDIATE", (), orig)
