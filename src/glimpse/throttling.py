"""Throttling: named budgets of requests in moving windows, counted with the `limits` library.

The setting (`GLIMPSE_RATE_LIMITS`, DESIGN.md) names budgets in the library's notation:
`api=300/5minute;upload=30/30minute;signin_failures=5/minute;signup=100/hour`, or `off`.
A budget left out keeps its default; `name=off` lifts that one budget.

- `api`: every /api/v1 request, per bearer token, or per client address without one. Naming
  `reads` and/or `writes` gives GET/HEAD/OPTIONS and the other methods budgets of their own
  (each falls back to `api`).
- `upload`: new posts, per account, counted before the body is read.
- `signin_failures`: failed sign-ins, per client address and per account (see SignInGuard).
- `signup`: new accounts, per client address.
- `follows`: follow requests (POST .../follow), per account.
- `comments`: new comments, per account.
- `exports`: data exports started (POST /api/v1/me/export), per account.

Counts live in the library's storage: in this process's memory by default; in Redis when
GLIMPSE_CACHE_URL names one, shared by every API process (Throttle.in_redis).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from glimpse.errors import Throttled

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("glimpse.throttling")
T = TypeVar("T")

API, READS, WRITES = "api", "reads", "writes"
UPLOAD, SIGNIN_FAILURES, SIGNUP = "upload", "signin_failures", "signup"
FOLLOWS, COMMENTS, EXPORTS = "follows", "comments", "exports"
BUDGET_NAMES = (API, READS, WRITES, UPLOAD, SIGNIN_FAILURES, SIGNUP, FOLLOWS, COMMENTS, EXPORTS)

DEFAULT_BUDGETS = {
    API: "300/5minute",
    UPLOAD: "30/30minute",
    SIGNIN_FAILURES: "5/minute",
    SIGNUP: "100/hour",
    # A follow makes a job merge up to a feed's cap of posts, and a burst of them is how spam
    # accounts grow: more than a person does in an hour, fewer than a script would.
    FOLLOWS: "200/hour",
    COMMENTS: "100/hour",
    # Each export reads every file the account ever stored and writes a zip of them.
    EXPORTS: "10/day",
}

Key = tuple[str, ...]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def parse_rate_limits(setting: str) -> dict[str, RateLimitItem]:
    """The budgets a setting names, over DEFAULT_BUDGETS; {} for `off`. ValueError names the
    part that is wrong."""
    setting = setting.strip()
    if setting.lower() == "off":
        return {}
    texts = dict(DEFAULT_BUDGETS)
    for part in filter(None, (p.strip() for p in setting.split(";"))):
        name, sep, value = (s.strip() for s in part.partition("="))
        if not sep or name not in BUDGET_NAMES:
            raise ValueError(
                f"rate limit {part!r}: expected NAME=N/PERIOD, NAME one of {', '.join(BUDGET_NAMES)}"
            )
        texts[name] = value
    budgets: dict[str, RateLimitItem] = {}
    for name, value in texts.items():
        if value.lower() == "off":
            continue
        try:
            item = parse(value)
        except ValueError:
            raise ValueError(
                f"rate limit {name}={value!r}: expected N/PERIOD, say 300/5minute"
            ) from None
        if item.amount < 1:
            raise ValueError(f"rate limit {name}={value!r}: the amount must be at least 1")
        budgets[name] = item
    return budgets


def request_budget(budgets: dict[str, RateLimitItem], method: str) -> str | None:
    """Which budget an API request of this method counts against, if any."""
    name = READS if method.upper() in _SAFE_METHODS else WRITES
    if name in budgets:
        return name
    return API if API in budgets else None


class MovingWindowMemory(MemoryStorage):
    """The `limits` library's memory storage with a cheap expiry.

    Its own expiry pass starts again whenever the previous one has finished and a request
    comes, and walks every key with a thread hop each: with 120 accounts at work it cost 0.8 ms
    of CPU per read and 4 ms per upload (bench/bench_throttling.py), growing with the number of
    active clients. Here old entries are dropped at most once a second, in one pass on the event
    loop without awaiting (so no request is half-way through a key meanwhile): a bisect per
    key, microseconds for thousands of keys. It replaces the storage's private hooks, so the
    `limits` version is pinned to the major release this was written against (pyproject.toml);
    tests/unit/test_rate_limits.py checks that the hooks are still the ones called.
    """

    EXPIRE_EVERY_SECONDS = 1.0

    def __init__(self) -> None:
        self._next_expiry = 0.0
        super().__init__()

    async def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_expiry:
            self._next_expiry = now + self.EXPIRE_EVERY_SECONDS
            self.expire_now()

    def expire_now(self) -> None:
        now = time.time()
        for key, events in list(self.events.items()):
            # Newest first, so the entries still in force are a prefix.
            kept = bisect.bisect_left(events, -now, key=lambda event: -event.expiry)
            if kept:
                if kept < len(events):
                    self.events[key] = events[:kept]
            else:
                del self.events[key]
                self.locks.pop(key, None)
        for key, expires in list(self.expirations.items()):
            if expires <= now:
                self.storage.pop(key, None)
                del self.expirations[key]
                self.locks.pop(key, None)


@dataclass(frozen=True)
class Verdict:
    """One budget's state after a request was counted against it: what RateLimit-* report."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # until the window has room again (RateLimit-Reset)

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


def throttled(verdict: Verdict, message: str) -> Throttled:
    """The 429 for a budget that is spent, with Retry-After and its RateLimit-* headers."""
    error = Throttled(message, retry_after=verdict.reset_seconds)
    error.headers = {**(error.headers or {}), **verdict.headers()}
    return error


class Throttle:
    """Counts hits against the configured budgets. Exact under concurrency: the storage takes
    a window's entries under a lock (in Redis, one script), so N requests at once against a
    budget of K admit K.

    With a shared storage (Redis) that cannot be reached, counts are kept in this process's
    memory for FALLBACK_SECONDS at a time rather than refusing requests: each process then
    grants a budget of its own for a while, which is better than an API that stops answering
    with the cache."""

    FALLBACK_SECONDS = 5.0

    def __init__(
        self,
        setting: str,
        storage_url: str = "async+memory://",
        *,
        storage: Storage | None = None,
    ) -> None:
        self.budgets = parse_rate_limits(setting)
        if storage is None:
            made = (
                MovingWindowMemory()
                if storage_url == "async+memory://"
                else storage_from_string(storage_url)
            )
            if not isinstance(made, Storage):
                raise ValueError(f"{storage_url!r} is not an async storage (async+memory://, ...)")
            storage = made
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._local: MovingWindowMemory | None = None
        self._local_limiter = self._limiter
        if not isinstance(storage, MemoryStorage):
            self._local = MovingWindowMemory()
            self._local_limiter = MovingWindowRateLimiter(self._local)
        self._local_until = 0.0
        self._redis: Redis | None = None
        self._shared_prefix = ""  # of the keys of reserve() and note() in Redis
        self._redis_errors: tuple[type[Exception], ...] = ()

    @classmethod
    def in_redis(cls, setting: str, redis: Redis, prefix: str) -> Throttle:
        """Budgets shared by every process that uses this Redis (through `redis`'s pool)."""
        from limits.aio.storage import RedisStorage

        storage = RedisStorage(
            "async+redis://",  # the pool below is what connects
            implementation="redispy",
            key_prefix=f"{prefix}limits",
            wrap_exceptions=True,
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        )
        from redis.exceptions import RedisError

        throttle = cls(setting, storage=storage)
        throttle._redis = redis
        throttle._redis_errors = (RedisError, OSError)
        throttle._shared_prefix = f"{prefix}limits:"
        return throttle

    # How long a place taken by an attempt in flight is kept at most: a process that dies with
    # attempts in flight cannot give their places back, and they lapse after this.
    IN_FLIGHT_SECONDS = 120

    async def reserve(self, budget: str, keys: Sequence[Key]) -> dict[Key, int] | None:
        """Take one place for an attempt in flight on each key, in Redis, shared by every
        process that uses it; how many other attempts each key had in flight then. None when
        the counts are not shared (kept in memory, or Redis does not answer): the caller keeps
        its places in its own memory."""
        redis = self._shared_redis()
        if redis is None:
            return None
        try:
            async with redis.pipeline(transaction=True) as pipe:
                for key in keys:
                    pipe.incr(self._in_flight_name(budget, key))
                    pipe.expire(self._in_flight_name(budget, key), self.IN_FLIGHT_SECONDS)
                counts = (await pipe.execute())[::2]
        except self._redis_errors as error:
            self._local_until = time.monotonic() + self.FALLBACK_SECONDS
            log.warning("attempts in flight cannot be shared (%s); counting in this process", error)
            return None
        return {key: max(0, int(count) - 1) for key, count in zip(keys, counts, strict=True)}

    async def release(self, budget: str, keys: Sequence[Key]) -> None:
        """Give back the places `reserve` took (never below zero: a place that lapsed meanwhile
        is not taken from another attempt's)."""
        if self._redis is None:
            return
        # Not given back (Redis down): the places lapse after IN_FLIGHT_SECONDS.
        with contextlib.suppress(*self._redis_errors):
            await self._redis.eval(  # type: ignore[misc]
                _RELEASE_PLACES,
                len(keys),
                *(self._in_flight_name(budget, key) for key in keys),
            )

    def _in_flight_name(self, budget: str, key: Key) -> str:
        return self._shared_prefix + "in_flight:" + "/".join((budget, *key))

    async def note(self, key: Key, seconds: int) -> None:
        """Keep a mark for `key` this long in Redis, where every process sees it (nothing
        without one, or while it does not answer)."""
        redis = self._shared_redis()
        if redis is None:
            return
        with contextlib.suppress(*self._redis_errors):
            await redis.set(self._note_name(key), b"1", ex=seconds)

    async def noted(self, key: Key) -> bool:
        """Whether some process keeps a mark for `key` (False without Redis, or while it does
        not answer)."""
        redis = self._shared_redis()
        if redis is None:
            return False
        try:
            return bool(await redis.exists(self._note_name(key)))
        except self._redis_errors:
            return False

    def _shared_redis(self) -> Redis | None:
        """The Redis that every process shares, unless there is none or it failed lately (the
        budgets count in this process's memory meanwhile)."""
        if time.monotonic() < self._local_until:
            return None
        return self._redis

    def _note_name(self, key: Key) -> str:
        return self._shared_prefix + "noted:" + "/".join(key)

    async def _limiter_for(self, count: Callable[[MovingWindowRateLimiter], Awaitable[T]]) -> T:
        if self._local is None or time.monotonic() < self._local_until:
            return await count(self._local_limiter)
        try:
            return await count(self._limiter)
        except StorageError as error:
            self._local_until = time.monotonic() + self.FALLBACK_SECONDS
            log.warning(
                "rate-limit counts cannot be shared (%s); counting in this process for %.0f s",
                error.storage_error,
                self.FALLBACK_SECONDS,
            )
        return await count(self._local_limiter)

    @property
    def enabled(self) -> bool:
        return bool(self.budgets)

    async def hit(self, budget: str, *key: str) -> Verdict | None:
        """Count one request against `budget` for `key`; None when that budget is off."""
        item = self.budgets.get(budget)
        if item is None:
            return None

        async def count(limiter: MovingWindowRateLimiter) -> Verdict:
            allowed = await limiter.hit(item, budget, *key)
            if not allowed:
                # Imported here: config.py imports this module, and the CLI must not load
                # prometheus_client before `glimpse serve` has chosen its multiprocess folder.
                from glimpse.ops.metrics import THROTTLED, never_failing

                with never_failing():
                    THROTTLED.labels(budget).inc()
            return await self._verdict(limiter, item, allowed, budget, *key)

        return await self._limiter_for(count)

    async def remaining(self, budget: str, *key: str) -> Verdict | None:
        """The budget's state for `key`, counting nothing."""
        item = self.budgets.get(budget)
        if item is None:
            return None

        async def look(limiter: MovingWindowRateLimiter) -> Verdict:
            return await self._verdict(limiter, item, True, budget, *key)

        return await self._limiter_for(look)

    @staticmethod
    async def _verdict(
        limiter: MovingWindowRateLimiter, item: RateLimitItem, allowed: bool, *key: str
    ) -> Verdict:
        stats = await limiter.get_window_stats(item, *key)
        remaining = max(0, stats.remaining)
        # When room remains the window resets when its oldest entry leaves; reported either way.
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        return Verdict(allowed, item.amount, remaining, reset)

    async def close(self) -> None:
        # The memory storage expires old entries in a task of its own; stop it with the loop.
        for storage in (self._storage, self._local):
            timer = getattr(storage, "timer", None)
            if isinstance(timer, asyncio.Task):
                timer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await timer


_RELEASE_PLACES = """
for _, key in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', key) or '0')
  if n > 1 then redis.call('DECR', key) elseif n == 1 then redis.call('DEL', key) end
end
"""


@dataclass
class SignInAttempt:
    """What the caller learned: it marks the attempt `succeeded()` or `failed()`; an attempt
    marked neither (say, the hasher was busy) is not counted."""

    outcome: bool | None = None

    def succeeded(self) -> None:
        self.outcome = True

    def failed(self) -> None:
        self.outcome = False


class SignInGuard:
    """Limits failed sign-ins without letting an attacker lock the owner out.

    Each failure counts against the client address (so one address cannot guess at many
    accounts) and against an account-side key that depends on where it came from:

    - from an address that has signed in to this account before ("known"), against the
      (account, address) pair;
    - from any other address, against the account's one shared key for strangers.

    An attempt from a stranger is refused when either its address or the account's strangers'
    key is spent; an attempt from a known address only when its own pair is spent. So a
    password-guessing botnet gets `signin_failures` guesses per window at one account in all,
    however many addresses it has, while the owner, signing in from an address it used before
    (even one it shares with the attacker, behind one NAT), is judged only by its own failures
    there and is never locked out by theirs. (An owner on a new address during such an attack
    waits for the window, as with any lockout.) Accounts are keyed by the name asked for,
    existing or not, so that throttling behaves alike for both and does not tell which exist.

    When a budget is spent the attempt is refused before the password is looked at. Attempts
    in flight reserve their place: N at once against K remaining admit exactly K, although
    failures are counted only once their verify has finished. With the budgets in Redis the
    places are kept there too (Throttle.reserve), so a burst split across API processes admits
    K in all, not K per process.

    Known pairs are remembered in memory, the most recent `known_capacity` of them (a restart
    forgets them: everyone is a stranger again until they next sign in), and, with the budgets
    in Redis, there too for KNOWN_SECONDS from the last sign-in, so that every API process
    knows the owner's addresses, not only the one it signed in through.
    """

    KNOWN_SECONDS = 30 * 86400

    def __init__(self, throttle: Throttle, known_capacity: int = 100_000) -> None:
        self._throttle = throttle
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._known_capacity = known_capacity
        self._in_flight: dict[Key, int] = {}
        self._lock = asyncio.Lock()

    async def _keys(self, username: str, address: str) -> tuple[list[Key], list[Key]]:
        """The keys an attempt is judged by, and the keys its failure counts against."""
        by_address: Key = ("address", address)
        if await self._is_known(username, address):
            pair: Key = ("account", username, "known", address)
            return [pair], [by_address, pair]
        strangers: Key = ("account", username, "strangers")
        return [by_address, strangers], [by_address, strangers]

    @contextlib.asynccontextmanager
    async def attempt(self, username: str, address: str) -> AsyncIterator[SignInAttempt]:
        """Admit one sign-in attempt or raise Throttled; count it as it turns out."""
        if SIGNIN_FAILURES not in self._throttle.budgets:
            attempt = SignInAttempt()
            yield attempt
            if attempt.outcome:
                await self._remember(username, address)
            return
        judged_by, counted = await self._keys(username, address)
        async with self._lock:  # check and reserve as one step
            # Shared places are taken before the budget is read (and given back if refused):
            # two processes at once each then count the other's attempt, or see its failure.
            shared = await self._throttle.reserve(SIGNIN_FAILURES, counted)
            try:
                for key in judged_by:
                    verdict = await self._throttle.remaining(SIGNIN_FAILURES, *key)
                    assert verdict is not None
                    in_flight = self._in_flight.get(key, 0) if shared is None else shared[key]
                    if verdict.remaining - in_flight <= 0:
                        raise throttled(
                            Verdict(False, verdict.limit, 0, verdict.reset_seconds),
                            "Too many failed sign-ins; please wait before trying again.",
                        )
            except BaseException:
                if shared is not None:
                    await asyncio.shield(self._throttle.release(SIGNIN_FAILURES, counted))
                raise
            if shared is None:
                self._reserve(counted, +1)
        attempt = SignInAttempt()
        try:
            yield attempt
        finally:
            # Counted before the reservation is let go, so the place is never free in between;
            # and let go even if counting fails or is cancelled, or it would stay taken for good.
            try:
                if attempt.outcome is False:
                    for key in counted:
                        await self._throttle.hit(SIGNIN_FAILURES, *key)
            finally:
                if shared is None:
                    self._reserve(counted, -1)
                else:
                    await asyncio.shield(self._throttle.release(SIGNIN_FAILURES, counted))
        if attempt.outcome:
            await self._remember(username, address)

    def _reserve(self, keys: Iterable[Key], delta: int) -> None:
        for key in keys:
            count = self._in_flight.get(key, 0) + delta
            if count:
                self._in_flight[key] = count
            else:
                self._in_flight.pop(key, None)

    async def _is_known(self, username: str, address: str) -> bool:
        if (username, address) in self._known:
            return True
        if await self._throttle.noted(("known", username, address)):
            self._keep_known(username, address)  # (another process signed it in)
            return True
        return False

    async def _remember(self, username: str, address: str) -> None:
        self._keep_known(username, address)
        await self._throttle.note(("known", username, address), self.KNOWN_SECONDS)

    def _keep_known(self, username: str, address: str) -> None:
        self._known[(username, address)] = None
        self._known.move_to_end((username, address))
        while len(self._known) > self._known_capacity:
            self._known.popitem(last=False)
