"""The feed store contract: per-user materialised feeds of post ids, newest first.

A feed is a cache, never the only copy: whatever it lacks (a feed never built, expired, or
trimmed past its cap) is read from the posts and follows tables instead, and a feed that is gone
is rebuilt from them. So every method may be replayed (jobs are at-least-once) and losing the
whole store loses nothing but time.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from glimpse.errors import StorageUnavailable

Entry = tuple[int, int]  # (post id, author id)


@dataclass(frozen=True)
class FeedWindow:
    entries: list[Entry]  # newest first
    # The feed holds every pushed post with an id >= this (0: all of them); what is older was
    # trimmed away or never loaded, and is read from the database.
    horizon_id: int
    read_at: float  # unix seconds, to within FeedStore.TOUCH_SECONDS
    # How many entries the feed holds (on SQL as its pushes counted them, recounted at each
    # trim): a push changes it, even of a post older than the newest entry (feed/kept_pages.py).
    size: int = 0


class FeedStoreUnavailable(StorageUnavailable):
    """The store cannot be reached now (a cache server that is down). Feed reads answer from
    the database meanwhile. A store like the media store: a job that meets it is retried
    without counting the attempt, for as long as the media store's faults are (worker.py), so
    that a fan-out during an outage still reaches the feeds that survive it."""

    code = "cache_unavailable"

    def __init__(self, message: str = "The feed cache is unavailable.", *, retry_after: int = 5):
        super().__init__(message, retry_after=retry_after)


class FeedStore(Protocol):
    # A read marks its feed active (touch) at most this often: a write per read would cost
    # every read.
    TOUCH_SECONDS: float
    # Whether its every change is a commit to the project's database (the SQL store), of which
    # Database.version tells like of any other (feed/kept_pages.py).
    IN_DATABASE: bool

    async def window(self, user_id: int, below: int | None, limit: int) -> FeedWindow | None:
        """Up to `limit` entries with ids below `below` (and not below the horizon), newest
        first; None when the user has no feed (never built, expired, or still being built)."""

    async def begin_rebuild(self, user_id: int, now: float) -> None:
        """Mark the user's feed as live but not yet filled: pushes from now on reach it. The
        caller then reads the database and calls finish_rebuild; so a post that became ready
        meanwhile is either in what it read or pushed here, never neither."""

    async def finish_rebuild(
        self, user_id: int, entries: Sequence[Entry], horizon_id: int, now: float
    ) -> None:
        """Add what the database holds (entries pushed meanwhile stay) and open the feed to
        reads."""

    async def push(self, post_id: int, author_id: int, user_ids: Collection[int]) -> int:
        """Add one post to the feeds of those of `user_ids` that have one (fan-out on write);
        how many feeds that was. Feeds past their cap are trimmed back to it."""

    async def merge(self, user_id: int, entries: Sequence[Entry], complete_above: int = 0) -> None:
        """Add entries to one user's feed if it has one (say, a newly followed account's
        recent posts); those below its horizon are left to the database. `complete_above`: the
        entries are all there are only from this id up, so the horizon rises to it."""

    async def remove_author(self, user_ids: Collection[int], author_id: int) -> None:
        """Take an author's posts out of these users' feeds (an unfollow or a block: one user;
        an erased account: a batch of its followers, in one round trip)."""

    async def remove_post(self, post_id: int, user_ids: Collection[int]) -> None:
        """Take one post out of these users' feeds (the post was deleted)."""

    async def touch(self, user_id: int, now: float) -> None:
        """The user read their feed: it is active, and keeps being pushed to."""

    async def expire(self, idle_since: float, limit: int) -> int:
        """Drop up to `limit` feeds not read since `idle_since`; how many were dropped.
        Inactive users cost fan-out nothing until they come back (and get a rebuild)."""

    async def drop(self, user_id: int) -> None: ...

    async def check(self) -> None:
        """A real round trip, for /readyz."""

    async def close(self) -> None: ...
