"""The one Redis client of a process: GLIMPSE_CACHE_URL names the server, and everything kept
there (feeds, rate-limit counts) shares its connection pool.

The URL is redis-py's (`redis://[:password@]host:port/db`, `rediss://...`, `unix:///path?db=N`)
plus one parameter of ours, `prefix` (default `glimpse:`), put before every key, so that
several deployments (or test runs) can share one Redis database without meeting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from redis.asyncio import Redis

REDIS_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_PREFIX = "glimpse:"

# A Redis that is down must cost a request little: a refused connection fails at once, a host
# that does not answer within these. (Whoever calls falls back to the database or to memory.)
CONNECT_TIMEOUT_SECONDS = 1.0
COMMAND_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class RedisTarget:
    url: str  # as redis-py takes it (our `prefix` taken out)
    prefix: str


def is_redis_url(url: str) -> bool:
    return urlsplit(url).scheme in REDIS_SCHEMES


def parse_redis_url(url: str) -> RedisTarget:
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        raise ValueError(f"not a Redis URL: {url!r} (redis://, rediss:// or unix://)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for name, value in query if name == "prefix"), DEFAULT_PREFIX)
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    return RedisTarget(urlunsplit(parts._replace(query=rest)), prefix)


def open_redis(target: RedisTarget) -> Redis:
    """A client with its pool; it connects on first use (nothing connects at import or build).
    redis-py is imported here: it is installed with the `redis` extra, for those who use it."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import ConstantBackoff

    client: Redis = Redis.from_url(
        target.url,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=COMMAND_TIMEOUT_SECONDS,
        # One quick retry covers a connection the server closed while idle (a restart); more
        # would only hold a request longer while the server is down.
        retry=Retry(ConstantBackoff(0.05), 1),
        health_check_interval=30,
    )
    pool = client.connection_pool
    pool.connection_class = _closed_is_a_connection_error(pool.connection_class)
    return client


def _closed_is_a_connection_error(base: Any) -> Any:
    """`base` (redis-py's connection class for the URL's scheme), but a write to a transport
    that was closed under it is the ConnectionError it is, not a RuntimeError. On uvloop, a
    Redis dropping its connections made redis-py's write raise uvloop's RuntimeError ("the
    handler is closed"), which none of this process's Redis users (feeds, rate limits, post
    summaries, write notes: they share this pool) took for Redis being unavailable: a 500. As a
    ConnectionError, the client's one retry takes a new connection, and each user falls back
    as it does when Redis is down."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    class ClosedIsAConnectionError(base):  # type: ignore[misc]
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            try:
                await super().send_packed_command(command, check_health)
            except RuntimeError as error:
                raise RedisConnectionError(
                    f"the connection closed under a write: {error}"
                ) from error

    ClosedIsAConnectionError.__name__ = f"ClosedIsAConnectionError{base.__name__}"
    return ClosedIsAConnectionError
