"""A story's lifetime, as plain functions over times: when it expires, whether it is live, and
until when its media may be fetched. Every read path asks these (or their SQL form,
graph.visibility.still_shown), never the reaper's progress: expiry is exact to the second."""

from __future__ import annotations

import math
from datetime import datetime, timedelta


def expiry_of(created_at: datetime, ttl_seconds: int) -> datetime:
    return created_at + timedelta(seconds=ttl_seconds)


def is_live(expires_at: datetime, now: datetime) -> bool:
    """A story is shown up to, and not at, its expiry."""
    return now < expires_at


def media_shown(expires_at: datetime, now: datetime, held: bool) -> bool:
    """Whether the story's media is linked at all: while it lives, or while a highlight holds
    it (then it outlives the story)."""
    return held or is_live(expires_at, now)


def url_deadline(expires_at: datetime, held: bool) -> int | None:
    """When a signed URL of the story's media must stop working at the latest (seconds since
    the epoch): at its expiry, so that a copied URL dies with the story; None, no deadline of
    its own, while a highlight holds it."""
    return None if held else math.floor(expires_at.timestamp())
