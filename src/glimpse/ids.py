"""64-bit time-sortable ids: 41 bits of milliseconds since EPOCH_MS, 13 bits of node, 10 of sequence.

Instagram's published scheme. Ids sort like creation time, so "newest first" is "largest id first"
and an id doubles as a pagination cursor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NODE_BITS = 13
SEQUENCE_BITS = 10
MAX_NODE = (1 << NODE_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1


def compose_id(ms_since_epoch: int, node: int, sequence: int) -> int:
    return (ms_since_epoch << (NODE_BITS + SEQUENCE_BITS)) | (node << SEQUENCE_BITS) | sequence


def id_timestamp_ms(value: int) -> int:
    """Unix time in milliseconds at which the id was made."""
    return (value >> (NODE_BITS + SEQUENCE_BITS)) + EPOCH_MS


def smallest_id_at(unix_ms: int) -> int:
    """The smallest id that could have been made at `unix_ms`: a lower bound for time-range queries."""
    return compose_id(max(0, unix_ms - EPOCH_MS), 0, 0)


class NodeLeaseExpired(RuntimeError):
    """The lease on this process's node ran out before it was renewed (say, the process was
    suspended): another process may own the node now, so no id may be made with it."""


class IdGenerator:
    """Makes unique ids for one node. Thread-safe; each process that writes must have its own node."""

    def __init__(self, node: int, clock_ms: Callable[[], int] | None = None) -> None:
        if not 0 <= node <= MAX_NODE:
            raise ValueError(f"node must be within 0..{MAX_NODE}")
        self._node = node
        self._clock = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0
        self._valid_until_ms: int | None = None

    @property
    def node(self) -> int:
        return self._node

    def use_node(self, node: int) -> None:
        """Switch to another node (a newly leased one)."""
        if not 0 <= node <= MAX_NODE:
            raise ValueError(f"node must be within 0..{MAX_NODE}")
        with self._lock:
            self._node = node

    def hold_until(self, unix_ms: int | None) -> None:
        """Make ids with this node only until `unix_ms` (None: for ever), when its lease ends."""
        with self._lock:
            self._valid_until_ms = unix_ms

    def next_id(self) -> int:
        with self._lock:
            clock = self._clock()
            if self._valid_until_ms is not None and clock > self._valid_until_ms:
                raise NodeLeaseExpired(f"the lease on id node {self._node} has run out")
            now = clock - EPOCH_MS
            # A clock that steps back would repeat ids: keep using the last millisecond instead.
            now = max(now, self._last_ms)
            if now == self._last_ms:
                self._sequence = (self._sequence + 1) & MAX_SEQUENCE
                if self._sequence == 0:
                    # 1,024 ids in one millisecond: borrow the next millisecond.
                    now += 1
            else:
                self._sequence = 0
            self._last_ms = now
            return compose_id(now, self._node, self._sequence)
