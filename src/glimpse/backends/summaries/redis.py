"""Post summaries in Redis (GLIMPSE_CACHE_URL=redis://...), shared by every API process, behind
a first level in this process's memory.

A page's summaries cost one round trip at most: those the first level lacks in one MGET. The
misses, built from the database by the caller, are written in one pipeline of SET ... EX (only
on a page that had misses). Each is one string key, `{prefix}summary:v1:{post id}`, of JSON:
  - kept `ttl_seconds` (a day by default): ready media change only by gaining AVIF copies, so
    the TTL bounds memory rather than staleness;
  - kept `unfinished_seconds` only while its photos still lack the AVIF copies being made here,
    like the first level, so a `forget` lost to a race (a reader that built the summary just
    before the copies were recorded and wrote it just after the DEL) or to an outage is stale
    for that long here, and as long again in a first level that read it just before it went.
`forget` is one DEL; the first levels of other processes keep an unfinished summary for
`unfinished_seconds` at most (see memory.py).

Redis down costs a read nothing but its own statements: any failure counts as a miss (or a
write not made), is logged once, and for `RETRY_SECONDS` after it Redis is not asked at all, so
requests do not each wait for a timeout (the feed store does the same).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from glimpse.backends.summaries.base import Summary
from glimpse.backends.summaries.memory import MemorySummaryCache

log = logging.getLogger("glimpse.summaries")

DEFAULT_TTL_SECONDS = 86_400
# The version in the key: a release that changes what a summary holds reads none of the old.
_KEY = "summary:v1:"


class RedisSummaryCache:
    RETRY_SECONDS = 5.0

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        first_level: MemorySummaryCache | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix + _KEY
        self._ttl = ttl_seconds
        self.first_level = first_level if first_level is not None else MemorySummaryCache()
        self._down_until = 0.0

    def _key(self, post_id: int) -> str:
        return f"{self._prefix}{post_id}"

    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, doing: str) -> None:
        if self._usable():  # once per outage, not once per request
            log.warning(
                "Redis does not answer (%s post summaries); reading them from the database",
                doing,
                exc_info=True,
            )
        self._down_until = time.monotonic() + self.RETRY_SECONDS

    async def get_many(self, post_ids: Sequence[int]) -> dict[int, Summary]:
        found = await self.first_level.get_many(post_ids)
        missing = [p for p in post_ids if p not in found]
        if not missing or not self._usable():
            return found
        try:
            values = await self._client.mget([self._key(p) for p in missing])
        except (RedisError, OSError):
            self._failed("reading")
            return found
        shared: dict[int, Summary] = {}
        for post_id, value in zip(missing, values, strict=True):
            if value is not None:
                shared[post_id] = orjson.loads(value)
        await self.first_level.put_many(shared)
        return found | shared

    async def put_many(self, summaries: Mapping[int, Summary]) -> None:
        await self.first_level.put_many(summaries)
        if not summaries or not self._usable():
            return
        unfinished = self.first_level.entries.unfinished_seconds
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for post_id, summary in summaries.items():
                    ttl = (
                        unfinished if self.first_level.entries.is_unfinished(summary) else self._ttl
                    )
                    pipe.set(self._key(post_id), orjson.dumps(summary), px=int(ttl * 1000))
                await pipe.execute()
        except (RedisError, OSError):
            self._failed("writing")

    async def forget(self, post_ids: Collection[int]) -> None:
        await self.first_level.forget(post_ids)
        if not post_ids:
            return
        # Tried even while reads skip Redis: a DEL that gets through is worth its wait here
        # (jobs and deletions, not page reads).
        try:
            await self._client.delete(*(self._key(p) for p in post_ids))
        except (RedisError, OSError):
            self._failed("forgetting")

    async def close(self) -> None:
        return None  # the client is the container's, closed there
