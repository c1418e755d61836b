"""Per-key locks held until the caller's transaction ends.

A write transaction on SQLite already excludes every other writer (BEGIN IMMEDIATE), so a
read-then-write inside it cannot race. PostgreSQL runs writers side by side under READ COMMITTED:
two of them may both read "nothing there" and both act. A transaction-scoped advisory lock per
key puts the writers that care about the same key in line; the next one in line reads what the
first committed, because each statement of READ COMMITTED takes a fresh snapshot. It is released
at COMMIT or ROLLBACK, so a crashed process never leaves one behind."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def lock_number(key: str) -> int:
    """A signed 64-bit number for `key` (what pg_advisory_xact_lock takes). Two keys sharing a
    number only ever wait for each other needlessly; they never skip a lock."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


async def lock_keys(session: AsyncSession, keys: Iterable[str]) -> None:
    """Hold a lock per key until this transaction ends (nothing to do on SQLite). Taken in one
    order, so two transactions locking overlapping sets never deadlock."""
    if (await session.connection()).dialect.name == "sqlite":
        return
    for number in sorted({lock_number(key) for key in keys}):
        await session.execute(_LOCK, {"key": number})
