"""The post-summary cache: the part of a post's API view that is the same for every viewer and
costs statements to build, kept between requests.

What a summary is: the Media views (variants and their URLs) of a ready post whose author is
public, as posts/views.py builds them. Nothing in it decides who sees what, and nothing in it
changes often:
- visibility, counts (`like_count`, `comment_count`), `liked_by_me`, the caption and the
  author's names are read from the database on every read (the visibility statement returns
  the counts and caption with the post; authors are one statement per page), so a like, a
  comment, a deletion, an erasure, a block, going private or a new display name shows on the
  very next read whatever the cache holds;
- the media of a ready post change once at most: its photos gain their AVIF copies (posts/
  avif.py). The job that records them calls `forget` (Redis at once; the memory of other
  processes keeps a summary still missing them `unfinished_seconds`, 10, at most). Such a
  summary is kept that long in Redis too, so a `forget` lost to a race or an outage leaves it
  stale for twice that at most (in Redis, then in a process that read it there just before).
A caller looks a summary up only for posts it has just found visible and public.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

# A post's Media views, in order, as posts/views.py builds them (plain JSON values).
Summary = list[dict[str, Any]]


class PostSummaryCache(Protocol):
    async def get_many(self, post_ids: Sequence[int]) -> dict[int, Summary]:
        """The summaries held of these posts (those it has none of are left out). Never fails:
        a cache that cannot answer holds nothing."""
        ...

    async def put_many(self, summaries: Mapping[int, Summary]) -> None:
        """Keep these (best effort: a cache that cannot be written is left as it is)."""
        ...

    async def forget(self, post_ids: Collection[int]) -> None:
        """Drop these posts' summaries: after the transaction that changed their media (AVIF
        copies made) or deleted them has committed."""
        ...

    async def close(self) -> None: ...
