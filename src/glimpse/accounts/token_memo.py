"""Live tokens remembered while the database is quiet.

Every authenticated request looks its token up (the join of tokens and accounts); on the home
feed's kept pages that look-up was a sixth of a request's time (bench/bench_feed.py). A token
found live is remembered with the database's version read before the look-up
(Database.version, SQLite only): while the version is the same, nothing was committed by any
process since, so no token was revoked and no account disabled, and the token is still live
until its own expiry. Any commit at all (a like, an upload, another sign-in) makes every entry
look the token up again: a remembered token is never trusted past a change, however
unrelated."""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import UTC, datetime

Version = tuple[int, int]


class TokenMemo:
    """Token hashes found live, by version; the least recently used dropped past
    `max_entries` (about 200 bytes each)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max = max_entries
        self._tokens: OrderedDict[str, tuple[Version, int, float]] = OrderedDict()

    def get(self, token_hash: str, version: Version) -> int | None:
        """The account behind the token, if it was found live at this very version and has not
        expired since."""
        found = self._tokens.get(token_hash)
        if found is None:
            return None
        seen_at, user_id, expires = found
        if seen_at != version or time.time() >= expires:
            return None
        self._tokens.move_to_end(token_hash)
        return user_id

    def put(
        self, token_hash: str, version: Version, user_id: int, expires_at: datetime | str
    ) -> None:
        """Found live by a look-up that began after `version` was read."""
        if self._max <= 0:
            return
        self._tokens[token_hash] = (version, user_id, _timestamp(expires_at))
        self._tokens.move_to_end(token_hash)
        while len(self._tokens) > self._max:
            self._tokens.popitem(last=False)


def _timestamp(value: datetime | str) -> float:
    # The quick path on SQLite reads the column as stored: UTC text (db/database.py).
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
