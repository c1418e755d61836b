"""argon2id password hashing, off the event loop and bounded.

A hash costs tens of milliseconds of CPU on purpose; run inline it would stall every request on
the loop, and run unbounded a burst of sign-ins would queue hundreds of threads.
"""

from __future__ import annotations

import asyncio

import argon2


class PasswordHasher:
    def __init__(self, concurrency: int) -> None:
        self._hasher = argon2.PasswordHasher()  # argon2id, RFC 9106 low-memory parameters
        self._slots = asyncio.Semaphore(max(1, concurrency))
        # Verifying against this when the user does not exist keeps sign-in timing the same,
        # so response times do not reveal which usernames exist.
        self._dummy_hash = self._hasher.hash("not a real password")

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._dummy_hash, password) and bool(
                password_hash
            )
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
