"""argon2id password hashing, off the event loop and bounded.

A hash costs tens of milliseconds of CPU on purpose; run inline it would stall every request on
the loop, and run unbounded a burst of sign-ins would queue hundreds of threads. So hashes run
`concurrency` at a time, at most `queue` callers wait for a turn, and the next one is told at
once to come back later (503): a flood of sign-ins would otherwise make an honest one wait for
all of them (seconds) and hold their connections meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import argon2

from glimpse.wait_line import WaitLine

# What a refused caller is told: a queue of a few waiters drains in well under a second.
BUSY_RETRY_AFTER_SECONDS = 1


class PasswordHasher:
    def __init__(
        self,
        concurrency: int,
        queue: int = 16,
        time_cost: int = argon2.DEFAULT_TIME_COST,
        memory_kib: int = argon2.DEFAULT_MEMORY_COST,
    ) -> None:
        # argon2id; the defaults are RFC 9106's low-memory parameters.
        self._hasher = argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        self._line = WaitLine(
            concurrency,
            queue,
            "Too many sign-ins at once; please try again in a moment.",
            BUSY_RETRY_AFTER_SECONDS,
        )
        # Verifying against this when the user does not exist keeps sign-in timing the same,
        # so response times do not reveal which usernames exist. Made by the same hasher, so
        # it has the parameters (and the cost) of every real hash.
        self._dummy_hash = self._hasher.hash("not a real password")

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        await self._line.enter()
        try:
            yield
        finally:
            self._line.leave()

    async def hash(self, password: str) -> str:
        async with self._slot():
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when `password` matches. With no hash (no such user) it verifies against the
        dummy hash all the same, and answers False: the same work either way."""
        async with self._slot():
            return await asyncio.to_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._dummy_hash, password) and bool(
                password_hash
            )
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
