"""The feed store in Redis (GLIMPSE_CACHE_URL=redis://...): what SqlFeedStore keeps in two
tables, kept in two keys per user, each multi-step change one Lua script (atomic on the server).

- `{prefix}feed:{user}`: a sorted set of entries `"<post id, 19 digits>:<author id>"`, all at
  score 0, so that they sort by post id as strings (ZREVRANGEBYLEX). Scores are doubles, exact
  only to 2**53, and our ids use 63 bits: as scores, two posts of the same millisecond would
  tie or swap. One more member, the empty string (it sorts first, below any horizon), says the
  set exists even when it holds no entry: a feed whose set was lost (evicted, expired apart from
  its hash) is no feed, and gets rebuilt, rather than a feed that looks empty.
- `{prefix}feed:{user}:meta`: a hash of `horizon` (19 digits, compared as a string: Lua's
  numbers are doubles too), `built_at` (0 while being built) and `read_at`.
- `{prefix}feeds:read`: every feed by `read_at`, for `expire()`.

Both keys of a feed expire `idle_ttl` (+ TOUCH_SECONDS) after the last read that touched it,
so Redis itself forgets inactive users; `expire()` does the same from the index, for the hourly
job. Losing any of it (FLUSHDB, a restart without persistence) loses nothing: a missing feed is
rebuilt from the database on the next read. A push reaches many users' keys in one script, so
the store wants one Redis server (or a primary with replicas), not a cluster.

Any failure to reach Redis raises FeedStoreUnavailable; after one, calls fail at once for
`RETRY_SECONDS` instead of each waiting for a timeout (feed reads answer from the database).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from glimpse.backends.feed.base import Entry, FeedStoreUnavailable, FeedWindow

log = logging.getLogger("glimpse.feed")

T = TypeVar("T")

# Users per push script: a thousand keeps each call to about 2 ms (Redis runs one script at a
# time, so a long one would hold up every other client), and the calls of one push go in one
# pipeline.
_PUSH_BATCH = 1000
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)


def _entry(post_id: int, author_id: int) -> str:
    return f"{post_id:019d}:{author_id}"


def _parse(member: bytes) -> Entry:
    post, _, author = member.partition(b":")
    return int(post), int(author)


# (Members go to ZADD and ZREM 1000 at a time: Lua's unpack takes a few thousand values at most.)
# Trim a feed past `trim_past` entries back to `cap`, the oldest first; the oldest entry kept
# becomes the horizon if that raises it (everything older is read from the database).
_TRIM = """
local function trim(meta, entries, cap, trim_past)
  local n = redis.call('ZCARD', entries) - 1
  if n <= trim_past then return end
  redis.call('ZREMRANGEBYRANK', entries, 1, n - cap)
  local kth = string.sub(redis.call('ZRANGE', entries, 1, 1)[1], 1, 19)
  local horizon = redis.call('HGET', meta, 'horizon')
  -- (No hash: the feed is no feed, and must not look like one by a hash of a horizon alone.)
  if horizon and kth > horizon then redis.call('HSET', meta, 'horizon', kth) end
end
local function zadd_all(entries, first, last)
  for i = first, last, 1000 do
    local args = {}
    for j = i, math.min(i + 1000 - 1, last) do
      args[#args + 1] = 0
      args[#args + 1] = ARGV[j]
    end
    redis.call('ZADD', entries, unpack(args))
  end
end
local function live(meta, entries)
  return redis.call('EXISTS', meta) == 1 and redis.call('ZSCORE', entries, '') ~= false
end
local function keep(meta, entries, index, now, ttl, user)
  redis.call('EXPIRE', meta, ttl)
  redis.call('EXPIRE', entries, ttl)
  redis.call('ZADD', index, now, user)
end
"""

# KEYS: meta, entries. ARGV: the exclusive upper bound ("+" or "(<id>"), limit.
_WINDOW = """
local meta = redis.call('HMGET', KEYS[1], 'horizon', 'built_at', 'read_at')
if not meta[2] or meta[2] == '0' or not redis.call('ZSCORE', KEYS[2], '') then return false end
local out = {meta[1], meta[3], redis.call('ZCARD', KEYS[2])}
local found = redis.call('ZREVRANGEBYLEX', KEYS[2], ARGV[1], '[' .. meta[1], 'LIMIT', 0, ARGV[2])
for i = 1, #found do out[#out + 1] = found[i] end
return out
"""

# KEYS: meta, entries, index. ARGV: now, ttl, user.
_BEGIN_REBUILD = (
    _TRIM
    + """
if live(KEYS[1], KEYS[2]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'horizon', '0000000000000000000', 'built_at', '0', 'read_at', ARGV[1])
redis.call('ZADD', KEYS[2], 0, '')
keep(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3])
return 1
"""
)

# KEYS: meta, entries, index. ARGV: now, ttl, user, horizon, cap, trim_past, entries...
_FINISH_REBUILD = (
    _TRIM
    + """
if not live(KEYS[1], KEYS[2]) then return 0 end
zadd_all(KEYS[2], 7, #ARGV)
local horizon = redis.call('HGET', KEYS[1], 'horizon')
if ARGV[4] > horizon then horizon = ARGV[4] end
redis.call('HSET', KEYS[1], 'horizon', horizon, 'built_at', ARGV[1], 'read_at', ARGV[1])
trim(KEYS[1], KEYS[2], tonumber(ARGV[5]), tonumber(ARGV[6]))
keep(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3])
return 1
"""
)

# ARGV: entry, cap, trim_past, key prefix, the users' ids joined by commas. The keys are made
# here rather than passed: packing 20,000 key arguments cost redis-py more than the script
# itself (a single server, never a cluster, so a script may name keys it builds). A set whose
# hash is gone still gets the post (its next read rebuilds it anyway): one lookup fewer a user.
_PUSH = (
    _TRIM
    + """
local pushed = 0
local cap, trim_past, prefix = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] .. 'feed:'
for user in string.gmatch(ARGV[5], '[^,]+') do
  local entries = prefix .. user
  if redis.call('ZSCORE', entries, '') then
    redis.call('ZADD', entries, 0, ARGV[1])
    pushed = pushed + 1
    trim(entries .. ':meta', entries, cap, trim_past)
  end
end
return pushed
"""
)

# KEYS: meta, entries. ARGV: complete_above, cap, trim_past, entries...
_MERGE = (
    _TRIM
    + """
if not live(KEYS[1], KEYS[2]) then return 0 end
local horizon = redis.call('HGET', KEYS[1], 'horizon')
if ARGV[1] > horizon then
  horizon = ARGV[1]
  redis.call('HSET', KEYS[1], 'horizon', horizon)
end
local kept = 0
for i = 4, #ARGV do
  if string.sub(ARGV[i], 1, 19) >= horizon then
    redis.call('ZADD', KEYS[2], 0, ARGV[i])
    kept = kept + 1
  end
end
trim(KEYS[1], KEYS[2], tonumber(ARGV[2]), tonumber(ARGV[3]))
return kept
"""
)

# KEYS: entries. ARGV: ":<author id>".
_REMOVE_AUTHOR = """
local suffix = ARGV[1]
local gone = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 1, -1)) do
  if string.sub(member, -#suffix) == suffix then gone[#gone + 1] = member end
end
for i = 1, #gone, 1000 do
  redis.call('ZREM', KEYS[1], unpack(gone, i, math.min(i + 1000 - 1, #gone)))
end
return #gone
"""

# KEYS: meta, entries, index. ARGV: now, ttl, user.
_TOUCH = (
    _TRIM
    + """
local read_at = redis.call('HGET', KEYS[1], 'read_at')
if not read_at then return 0 end
if tonumber(read_at) < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'read_at', ARGV[1]) end
keep(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3])
return 1
"""
)


class RedisFeedStore:
    # As SqlFeedStore: a read marks its feed active at most this often.
    TOUCH_SECONDS = 3600.0
    IN_DATABASE = False
    # After Redis failed to answer, calls fail at once for this long.
    RETRY_SECONDS = 2.0

    def __init__(self, client: Redis, *, prefix: str, cap: int, idle_ttl: float) -> None:
        self._redis = client
        self._prefix = prefix
        self.cap = cap
        # Trimmed past a tenth over the cap, like SqlFeedStore: one ZCARD per push, and a trim
        # only every cap/10 pushes.
        self._trim_past = cap + max(1, cap // 10)
        # The keys outlive the idle period by the touch interval: a read refreshes them only
        # when it touches.
        self._ttl = int(idle_ttl + self.TOUCH_SECONDS) + 1
        self._index = f"{prefix}feeds:read"
        self._down_until = 0.0
        register = client.register_script
        self._window = register(_WINDOW)
        self._begin_rebuild = register(_BEGIN_REBUILD)
        self._finish_rebuild = register(_FINISH_REBUILD)
        self._push = register(_PUSH)
        self._merge = register(_MERGE)
        self._remove_author = register(_REMOVE_AUTHOR)
        self._touch = register(_TOUCH)

    def _keys(self, user_id: int) -> tuple[str, str]:
        entries = f"{self._prefix}feed:{user_id}"
        return f"{entries}:meta", entries

    async def _call(self, action: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        if now < self._down_until:
            raise FeedStoreUnavailable()
        try:
            return await action()
        except (*_UNREACHABLE, RuntimeError) as error:
            # RuntimeError: a connection closed under redis-py as it wrote (uvloop's "the
            # handler is closed", seen when Redis drops connections): unreachable too. Any
            # other RuntimeError is not the server's, and goes on.
            if isinstance(error, RuntimeError) and "closed" not in str(error):
                raise
            self._down_until = time.monotonic() + self.RETRY_SECONDS
            log.warning("the feed cache is unavailable: %s", error)
            raise FeedStoreUnavailable() from error

    async def window(self, user_id: int, below: int | None, limit: int) -> FeedWindow | None:
        upper = "+" if below is None else f"({below:019d}"
        found: Any = await self._call(
            lambda: self._window(keys=self._keys(user_id), args=[upper, limit])
        )
        if found is None:
            return None
        return FeedWindow(
            entries=[_parse(member) for member in found[3:]],
            horizon_id=int(found[0]),
            read_at=float(found[1]),
            size=int(found[2]),
        )

    async def begin_rebuild(self, user_id: int, now: float) -> None:
        await self._call(
            lambda: self._begin_rebuild(
                keys=[*self._keys(user_id), self._index], args=[repr(now), self._ttl, user_id]
            )
        )

    async def finish_rebuild(
        self, user_id: int, entries: Sequence[Entry], horizon_id: int, now: float
    ) -> None:
        args: list[Any] = [repr(now), self._ttl, user_id, f"{horizon_id:019d}"]
        args += [self.cap, self._trim_past, *(_entry(p, a) for p, a in entries)]
        await self._call(
            lambda: self._finish_rebuild(keys=[*self._keys(user_id), self._index], args=args)
        )

    async def push(self, post_id: int, author_id: int, user_ids: Collection[int]) -> int:
        ids = sorted(set(user_ids))
        if not ids:
            return 0
        args: list[Any] = [_entry(post_id, author_id), self.cap, self._trim_past, self._prefix]

        async def pushed() -> int:
            async with self._redis.pipeline(transaction=False) as pipe:
                for start in range(0, len(ids), _PUSH_BATCH):
                    batch = ",".join(map(str, ids[start : start + _PUSH_BATCH]))
                    await self._push(keys=[], args=[*args, batch], client=pipe)
                return sum(int(n) for n in await pipe.execute())

        return await self._call(pushed)

    async def merge(self, user_id: int, entries: Sequence[Entry], complete_above: int = 0) -> None:
        args: list[Any] = [f"{complete_above:019d}", self.cap, self._trim_past]
        args += [_entry(p, a) for p, a in entries]
        await self._call(lambda: self._merge(keys=self._keys(user_id), args=args))

    async def remove_author(self, user_ids: Collection[int], author_id: int) -> None:
        ids = sorted(set(user_ids))
        if not ids:
            return

        async def removed() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id in ids:
                    await self._remove_author(
                        keys=[self._keys(user_id)[1]], args=[f":{author_id}"], client=pipe
                    )
                await pipe.execute()

        await self._call(removed)

    async def remove_post(self, post_id: int, user_ids: Collection[int]) -> None:
        ids = sorted(set(user_ids))
        if not ids:
            return
        # Every entry of the post, whoever is named its author: "<id>:" up to "<id>;".
        low, high = f"[{post_id:019d}:", f"[{post_id:019d};"

        async def removed() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id in ids:
                    pipe.zremrangebylex(self._keys(user_id)[1], low, high)
                await pipe.execute()

        await self._call(removed)

    async def touch(self, user_id: int, now: float) -> None:
        await self._call(
            lambda: self._touch(
                keys=[*self._keys(user_id), self._index], args=[repr(now), self._ttl, user_id]
            )
        )

    async def expire(self, idle_since: float, limit: int) -> int:
        async def expired() -> int:
            users = await self._redis.zrangebyscore(
                self._index, "-inf", f"({idle_since!r}", start=0, num=limit
            )
            if users:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for user in users:
                        pipe.delete(*self._keys(int(user)))
                    pipe.zrem(self._index, *users)
                    await pipe.execute()
            return len(users)

        return await self._call(expired)

    async def drop(self, user_id: int) -> None:
        async def dropped() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(*self._keys(user_id))
                pipe.zrem(self._index, user_id)
                await pipe.execute()

        await self._call(dropped)

    async def check(self) -> None:
        # A real round trip, whatever happened lately (no fast failure here).
        await self._redis.ping()

    async def close(self) -> None:
        # The client belongs to the container (it shares it with the rate limits).
        return None
