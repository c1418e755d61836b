"""A full bucket: an S3 endpoint in front of a real one (moto) that answers every write as MinIO
answers when its disk is full, 507 `XMinioStorageFull`, while `full` is set. moto has no quotas
and AWS no full buckets, so this is how the tests (tests/integration/test_full_bucket.py,
tests/api/test_full_bucket.py, the fault suite's tests/faults/test_full_store.py) fill one.

Writes are PUT and POST but a multi-delete (a full MinIO still deletes, which is how an
operator makes room); reads and deletes go through untouched.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web

from tests.s3server import S3Server

STORAGE_FULL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>XMinioStorageFull</Code>'
    b"<Message>Storage backend has reached its minimum free drive threshold."
    b" Please delete a few objects to proceed.</Message></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FullableBucketProxy:
    """An S3 endpoint in front of `upstream` that refuses writes while `full` is set.

    `head_lengths=False` is the fault suite's first proxy, which answered HEADs without the
    object's length (aiohttp drops a Content-Length it did not measure from an empty body): an
    answer S3 never sends, that the store must take as its trouble (503), never as a 500."""

    def __init__(self, upstream: str, *, head_lengths: bool = True) -> None:
        self.upstream = upstream
        self.head_lengths = head_lengths
        self.full = False
        self.refused = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.endpoint = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        writes = request.method == "PUT" or (
            request.method == "POST" and "delete" not in request.query
        )
        if self.full and writes:
            self.refused += 1
            await request.read()
            return web.Response(status=507, body=STORAGE_FULL, content_type="application/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Host"] = self.upstream.split("//", 1)[1]
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            if (
                self.head_lengths
                and request.method == "HEAD"
                and "Content-Length" in answer.headers
            ):
                # (A HEAD has no body to measure: the object's length is the upstream's.)
                out["Content-Length"] = answer.headers["Content-Length"]
            return web.Response(status=answer.status, body=body, headers=out)

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(name="full_bucket")
def full_bucket_fixture(
    s3_server: S3Server, request: pytest.FixtureRequest
) -> Iterator[FullableBucketProxy]:
    """A proxy in front of the session's S3 server, not full yet (indirect parametrisation
    passes its keyword arguments: `{"head_lengths": False}`)."""
    proxy = FullableBucketProxy(s3_server.endpoint, **getattr(request, "param", {}))
    try:
        yield proxy
    finally:
        proxy.close()
