"""Post summaries in this process's memory (the embedded default, and the first level in front
of Redis): posts/views.MediaViewCache, an LRU, behind the PostSummaryCache contract.

Another process's `forget` does not reach it (`glimpse serve` runs its workers as processes of
their own), and needs not: once a post is ready, the only change to its renditions is its
photos gaining their AVIF copies, and a summary missing them is kept for `unfinished_seconds`
only (MediaViewCache). A processing job delivered again records nothing (posts/service.py,
record_processed_media), unless the files of the renditions recorded have gone missing: then a
video's run may record others of other bytes, and a summary here links the missing files until
it is pushed out, as it did before that run (a known gap)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from glimpse.backends.summaries.base import Summary
from glimpse.posts.views import MediaViewCache


class MemorySummaryCache:
    def __init__(
        self,
        max_posts: int = 20_000,
        *,
        expect_avif: bool = False,
        unfinished_seconds: float = 10.0,
    ) -> None:
        self.entries = MediaViewCache(
            max_posts, expect_avif=expect_avif, unfinished_seconds=unfinished_seconds
        )

    async def get_many(self, post_ids: Sequence[int]) -> dict[int, Summary]:
        found = {}
        for post_id in post_ids:
            hit = self.entries.get(post_id)
            if hit is not None:
                found[post_id] = hit
        return found

    async def put_many(self, summaries: Mapping[int, Summary]) -> None:
        for post_id, summary in summaries.items():
            self.entries.put(post_id, summary)

    async def forget(self, post_ids: Collection[int]) -> None:
        for post_id in post_ids:
            self.entries.drop(post_id)

    async def close(self) -> None:
        return None
