"""The real Redis the tests use (127.0.0.1:6379 unless GLIMPSE_TEST_REDIS_URL names another).

Each test gets a key prefix of its own in database 13 (GLIMPSE_TEST_REDIS_DB), so that tests
running at once, here or in other checkouts, never see each other's keys; only its own keys are
deleted afterwards (never FLUSHDB on a database others may use). Without the server the tests
skip, saying why; with CI=true they fail: the scale stack is then mandatory.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest
import redis

BASE_URL = os.environ.get("GLIMPSE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
DB = int(os.environ.get("GLIMPSE_TEST_REDIS_DB", "13"))


def redis_or_skip() -> redis.Redis:
    client = redis.Redis.from_url(f"{BASE_URL}/{DB}", socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        message = f"Redis at {BASE_URL} is not reachable ({error})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; with CI=true the scale-stack tests are mandatory")
        pytest.skip(message)
    return client


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A cache URL whose keys (prefix and all) are this test's alone."""
    client = redis_or_skip()
    prefix = f"glimpse-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield f"{BASE_URL}/{DB}?prefix={prefix}"
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def delete_keys(url: str) -> int:
    """Drop every key of this URL's prefix (what FLUSHDB does to a deployment, for one test)."""
    prefix = url.rsplit("prefix=", 1)[1]
    client = redis.Redis.from_url(f"{BASE_URL}/{DB}")
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


class RedisProxy:
    """A TCP proxy to the test Redis that a test can take down and bring back, on the same
    port: an outage of Redis for one app, without stopping the server others use."""

    def __init__(self) -> None:
        host_port = BASE_URL.removeprefix("redis://").split("/")[0]
        host, _, port = host_port.partition(":")
        self.target = (host, int(port or 6379))
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, prefix: str) -> str:
        return f"redis://127.0.0.1:{self.port}/{DB}?prefix={prefix}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}
