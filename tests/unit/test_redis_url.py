"""GLIMPSE_CACHE_URL for Redis: redis-py's URL plus our `prefix`."""

from __future__ import annotations

import pytest

from glimpse.backends.redis_client import DEFAULT_PREFIX, is_redis_url, parse_redis_url


def test_the_prefix_is_taken_out_and_the_rest_kept() -> None:
    target = parse_redis_url("redis://:pw@cache:6380/3?prefix=team-a:&socket_keepalive=true")
    assert target.prefix == "team-a:"
    assert target.url == "redis://:pw@cache:6380/3?socket_keepalive=true"


def test_without_a_prefix_keys_start_with_the_default() -> None:
    assert parse_redis_url("unix:///run/redis.sock?db=2").prefix == DEFAULT_PREFIX


@pytest.mark.parametrize(
    ("url", "redis"),
    [
        ("redis://h", True),
        ("rediss://h", True),
        ("unix:///s", True),
        ("sql://", False),
        ("", False),
    ],
)
def test_which_urls_are_redis(url: str, redis: bool) -> None:
    assert is_redis_url(url) is redis
