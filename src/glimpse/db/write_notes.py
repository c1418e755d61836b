"""Where each caller's last write left the primary's WAL: what a replica must have replayed
before that caller's next read may be served there (db/replicas.py).

Two keepers of these notes: this process's memory (one API process, or requests routed to the
process that took the write), and Redis (backends/redis_write_notes.py), shared by every API
process, so that a caller's next request sees its write whichever process it reaches.

A note holds the highest WAL position of the caller's writes, and, when a write's position
could not be read, a time until which the caller reads the primary ("pinned"). A keeper that
cannot say (Redis down) answers "pinned": reading the primary costs load, never a stale read.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

# When the WAL position of a write could not be read: its caller reads the primary this long.
UNKNOWN_POSITION_SECONDS = 30.0
# How many callers' notes this process's memory keeps; the oldest are forgotten first.
MAX_NOTED_CALLERS = 100_000


@dataclass(frozen=True)
class Note:
    # The replica must have replayed this far (a WAL position as a number), or None.
    lsn: int | None
    # Read the primary, whatever the replica has replayed.
    pinned: bool = False


# What a keeper answers when it does not know: the primary is always right.
READ_THE_PRIMARY = Note(lsn=None, pinned=True)


def lsn_number(text: str) -> int:
    """A WAL position as PostgreSQL writes it ("16/B374D848") as a number, in WAL order."""
    high, _, low = text.partition("/")
    if not low:
        raise ValueError(f"not a WAL position: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def lsn_text(number: int) -> str:
    """The number of lsn_number() as PostgreSQL reads it (pg_lsn)."""
    return f"{number >> 32:X}/{number & 0xFFFFFFFF:X}"


def stronger(a: Note | None, b: Note | None) -> Note | None:
    """The note that sends a read to the primary more often: pinned over not; the later
    position over the earlier one."""
    if a is None or b is None:
        return a or b
    if a.pinned or b.pinned:
        return READ_THE_PRIMARY
    return Note(lsn=max(a.lsn or 0, b.lsn or 0) or None)


class WriteNotes(Protocol):
    async def note(self, caller: int, lsn: int | None) -> None:
        """After a write of `caller` committed: the primary's WAL was at `lsn` (None: could
        not be read; the caller then reads the primary for UNKNOWN_POSITION_SECONDS)."""

    async def get(self, caller: int) -> Note | None:
        """What `caller`'s next replica read must wait for; None: no write to wait for."""

    async def forget(self, caller: int, lsn: int) -> None:
        """A replica has replayed past `lsn`: drop it, unless a later write moved the note on."""

    async def close(self) -> None: ...


class MemoryWriteNotes:
    """The notes in this process's memory: a caller's next request must reach this process
    for them to count (affinity on the token or cookie in the proxy)."""

    def __init__(
        self, capacity: int = MAX_NOTED_CALLERS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._capacity = capacity
        self._clock = clock
        # caller -> (highest position, or None; read the primary until this clock reading)
        self._notes: OrderedDict[int, tuple[int | None, float]] = OrderedDict()

    async def note(self, caller: int, lsn: int | None) -> None:
        old_lsn, pinned_until = self._notes.pop(caller, (None, 0.0))
        if lsn is None:
            pinned_until = self._clock() + UNKNOWN_POSITION_SECONDS
        else:
            lsn = max(lsn, old_lsn or 0)
        self._notes[caller] = (lsn if lsn is not None else old_lsn, pinned_until)
        while len(self._notes) > self._capacity:
            self._notes.popitem(last=False)

    async def get(self, caller: int) -> Note | None:
        found = self._notes.get(caller)
        if found is None:
            return None
        lsn, pinned_until = found
        if pinned_until > self._clock():
            return READ_THE_PRIMARY
        if lsn is None:
            del self._notes[caller]
            return None
        return Note(lsn=lsn)

    async def forget(self, caller: int, lsn: int) -> None:
        found = self._notes.get(caller)
        if found is None or found[0] != lsn:
            return
        if found[1] > self._clock():
            self._notes[caller] = (None, found[1])
        else:
            del self._notes[caller]

    async def close(self) -> None:
        self._notes.clear()
