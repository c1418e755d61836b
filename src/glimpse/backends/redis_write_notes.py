"""Read-your-own-writes notes (db/write_notes.py) in Redis, shared by every API process: a
caller's write through one process sends its next read through any other to the primary until
a replica has replayed it.

One hash per caller, `{prefix}written:{caller}`: `lsn`, the highest WAL position of its writes
(a number; a script keeps the maximum, since two processes' notes may arrive out of order), and
`pin`, a Unix time until which it reads the primary (a write whose position could not be read).
The key lives NOTE_SECONDS after the caller's last write; a replica read that finds the
position replayed drops `lsn` (only if no later write moved it on meanwhile).

Redis down: a write's note is kept in this process's memory instead (its own next reads still
see the write), and a read that cannot ask Redis goes to the primary; Redis is left alone for
RETRY_SECONDS after a failure so that a dead server costs a request nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from glimpse.db.write_notes import (
    READ_THE_PRIMARY,
    UNKNOWN_POSITION_SECONDS,
    MemoryWriteNotes,
    Note,
    stronger,
)

log = logging.getLogger(__name__)

# A replica that lags further behind than this is broken; a caller's note is kept this long.
NOTE_SECONDS = 3600
RETRY_SECONDS = 5.0
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)

# KEYS[1]: the caller's note. ARGV[1]: a WAL position, or "" for one that could not be read;
# ARGV[2]: until when the caller then reads the primary; ARGV[3]: the note's lifetime.
_NOTE = """
if ARGV[1] == '' then
  local pin = tonumber(redis.call('HGET', KEYS[1], 'pin'))
  if pin == nil or pin < tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], 'pin', ARGV[2])
  end
else
  local lsn = tonumber(redis.call('HGET', KEYS[1], 'lsn'))
  if lsn == nil or lsn < tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[1], 'lsn', ARGV[1])
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
"""

# Drop the position ARGV[1] once replayed, unless a later write replaced it.
_FORGET = """
if redis.call('HGET', KEYS[1], 'lsn') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'lsn')
end
"""


class RedisWriteNotes:
    def __init__(
        self,
        client: Redis,
        prefix: str,
        *,
        retry_seconds: float = RETRY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._note = client.register_script(_NOTE)
        self._forget = client.register_script(_FORGET)
        # Notes of writes made while Redis was down: this process's own reads still see them.
        self._local = MemoryWriteNotes()
        self._down_until = 0.0

    def _key(self, caller: int) -> str:
        return f"{self._prefix}written:{caller}"

    def _up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, doing: str, error: BaseException) -> None:
        self._down_until = time.monotonic() + self._retry_seconds
        log.warning("Redis is unavailable %s: %s; reading the primary instead", doing, error)

    async def note(self, caller: int, lsn: int | None) -> None:
        if self._up():
            pin = "" if lsn is not None else repr(self._clock() + UNKNOWN_POSITION_SECONDS)
            try:
                await self._note(
                    keys=[self._key(caller)],
                    args=["" if lsn is None else str(lsn), pin, NOTE_SECONDS],
                )
                return
            except _UNREACHABLE as error:
                self._failed("noting a write", error)
        await self._local.note(caller, lsn)

    async def get(self, caller: int) -> Note | None:
        local = await self._local.get(caller)
        if not self._up():
            return READ_THE_PRIMARY
        try:
            lsn, pin = await self._redis.hmget(self._key(caller), ["lsn", "pin"])  # type: ignore[misc]
        except _UNREACHABLE as error:
            self._failed("reading a write's note", error)
            return READ_THE_PRIMARY
        if pin is not None and float(pin) > self._clock():
            return READ_THE_PRIMARY
        shared = Note(lsn=int(lsn)) if lsn is not None else None
        return stronger(shared, local)

    async def forget(self, caller: int, lsn: int) -> None:
        await self._local.forget(caller, lsn)
        if not self._up():
            return
        try:
            await self._forget(keys=[self._key(caller)], args=[str(lsn)])
        except _UNREACHABLE as error:
            # Kept a while longer: its caller's reads wait for a replica that has it anyway.
            self._failed("dropping a replayed write's note", error)

    async def close(self) -> None:
        await self._local.close()
