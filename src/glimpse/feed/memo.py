"""A small per-process memo of answers about a viewer, for the feed's read path."""

from __future__ import annotations

import time
from collections import OrderedDict

# A database's version (Database.version).
Version = tuple[int, int]


class ViewerMemo:
    """Per-process answers about a viewer that may be a few seconds old: the followed accounts
    merged at read time, and the affinity counts. Neither can show what the viewer may not see
    (every candidate is checked afresh); a stale answer only delays a new follow of a large
    account by `ttl_seconds` (settings.feed_viewer_memo_seconds), or ranks with slightly older affinity.
    An answer put with the database's version (Database.version) read before it was looked
    up stays true, whatever its age, for as long as the version is the same: nothing was
    committed since.
    Also the order of the viewer's last ranked window, which is never stale: it is used only for
    the very same posts, counts and affinity (feed/service._Reader._rank)."""

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, int], tuple[float, object, Version | None]] = (
            OrderedDict()
        )

    def get(self, kind: str, viewer_id: int, version: Version | None = None) -> object | None:
        hit = self._entries.get((kind, viewer_id))
        if hit is None:
            return None
        put_at, value, put_version = hit
        if version is not None and put_version == version:
            return value
        if time.monotonic() - put_at >= self._ttl:
            return None
        return value

    def put(self, kind: str, viewer_id: int, value: object, version: Version | None = None) -> None:
        self._entries[(kind, viewer_id)] = (time.monotonic(), value, version)
        self._entries.move_to_end((kind, viewer_id))
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def forget(self, kind: str, viewer_id: int) -> None:
        self._entries.pop((kind, viewer_id), None)
