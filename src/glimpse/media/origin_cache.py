"""What the media origin remembers between requests, per process: who may see a key, and the
bytes of small files.

Keys are content-addressed, so a key's bytes never change and may be kept for as long as there
is room. Who may see them does change (a post deleted, an account gone private), so that answer
is kept only for `ttl_seconds`: such a change reaches the origin within that time, and a hot
photo costs one database lookup per TTL instead of one per request. For private media the
answer is per viewer (the one its signed URL names): an unfollow or a block reaches it within
the same TTL.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OriginEntry:
    visibility: str | None  # "public", "private", or None: no post uses the key (404)
    size: int
    data: bytes | None  # None when the file is too large to keep, or there is none
    checked_at: float
    stored: bool = True  # whether the file was there when this was checked
    # Answers made for this entry and kept for the next request (media/origin.py's
    # PreparedAnswer): they go when the entry does, so they never outlive its visibility.
    answers: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class OriginCache:
    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_bytes: int,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._max_bytes = max_bytes
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, OriginEntry] = OrderedDict()
        self._bytes = 0
        # (key, viewer) -> (may see it, when that was checked): private media's verdicts.
        self._verdicts: OrderedDict[tuple[str, int], tuple[bool, float]] = OrderedDict()

    def verdict(self, key: str, viewer_id: int) -> bool | None:
        """Whether this viewer may see this private key, if checked within the TTL."""
        hit = self._verdicts.get((key, viewer_id))
        if hit is None or self._clock() - hit[1] > self._ttl:
            return None
        return hit[0]

    def remember_verdict(self, key: str, viewer_id: int, allowed: bool) -> None:
        self._verdicts[(key, viewer_id)] = (allowed, self._clock())
        self._verdicts.move_to_end((key, viewer_id))
        while len(self._verdicts) > self._max_entries:
            self._verdicts.popitem(last=False)

    def get(self, key: str) -> OriginEntry | None:
        """The entry if its visibility is still fresh; None means "look it up"."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() - entry.checked_at > self._ttl:
            return None
        self._entries.move_to_end(key)
        return entry

    def put(
        self,
        key: str,
        visibility: str | None,
        size: int,
        data: bytes | None,
        *,
        stored: bool = True,
    ) -> OriginEntry:
        old = self._entries.pop(key, None)
        if old is not None and old.data is not None:
            self._bytes -= len(old.data)
            if data is None and visibility is not None:
                data = old.data  # the bytes behind a key never change: keep them
        if data is not None and len(data) > self._max_bytes // 16:
            data = None  # one file may not crowd out the rest
        entry = OriginEntry(visibility, size, data, self._clock(), stored)
        self._entries[key] = entry
        if data is not None:
            self._bytes += len(data)
        while self._entries and (
            self._bytes > self._max_bytes or len(self._entries) > self._max_entries
        ):
            _, evicted = self._entries.popitem(last=False)
            if evicted.data is not None:
                self._bytes -= len(evicted.data)
        return entry

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)
