"""A few turns at once, a short line for the next ones, and "come back later" past it.

For work that holds a thread or a process for a noticeable time (a password hash, a video's
check): waiting without bound would keep a flood's requests, and their connections, open, and
make an honest caller wait for all of them.
"""

from __future__ import annotations

import asyncio

from glimpse.errors import Unavailable


class WaitLine:
    def __init__(self, turns: int, line: int, busy_message: str, retry_after: int) -> None:
        self._turns = asyncio.Semaphore(max(1, turns))
        self._line = max(0, line)
        self._waiting = 0
        self._busy_message = busy_message
        self._retry_after = retry_after

    async def enter(self) -> None:
        """Wait for a turn; raises Unavailable (503 `busy`) when every turn is taken and the line
        is full. The caller must `leave()` once its work is over."""
        if self._turns.locked() and self._waiting >= self._line:
            raise Unavailable(self._busy_message, retry_after=self._retry_after, code="busy")
        self._waiting += 1
        try:
            await self._turns.acquire()
        finally:
            self._waiting -= 1

    def leave(self) -> None:
        self._turns.release()
