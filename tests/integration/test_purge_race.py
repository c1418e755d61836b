"""A purge racing a processing job that records the same object again, on PostgreSQL over S3
(moto_server): two containers, each with its own connections, as two worker processes have.

Variant keys are content-addressed: a post deleted while another post of the same photo is being
processed leaves a purge of keys the second post is about to record. The purge decides under a
per-key advisory lock (db/locks.py) that the recording also takes. The test holds that lock
itself while the purge and the recording line up behind it (seen in pg_locks), then lets them
go in a chosen order: whichever order, the second post ends ready with every file in the bucket.
A third case holds the purge's delete on its way to the bucket (a relay in front of the S3
server, for the purging container alone) until the recording has committed: the recording must
wait for the purge and store its files again, not find them still there and leave."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from glimpse.config import Settings
from glimpse.container import Container, build_container
from glimpse.db.locks import lock_number
from glimpse.db.urls import async_database_url
from glimpse.posts import repository
from glimpse.posts.jobs import purge_media_keys
from glimpse.worker import drain
from tests.conftest import Glimpse, jpeg_bytes
from tests.s3server import S3Server

pytestmark = pytest.mark.parametrize("database", ["postgresql"], indirect=True)


@pytest.fixture
def settings(settings: Settings, s3_server: S3Server) -> Settings:
    # Deleting a post purges its files only much later: the test runs that purge itself.
    return settings.model_copy(
        update={
            "storage_url": s3_server.storage_url(),
            "origin_cache_bytes": 0,
            "media_gc_delay_seconds": 3600,
        }
    )


@pytest.fixture
async def other_worker(settings: Settings) -> AsyncIterator[Container]:
    """A second process's container: its own engine, pool and S3 client."""
    container = build_container(settings)
    await container.start()
    try:
        yield container
    finally:
        await container.close()


class HeldRelay:
    """A TCP relay to the S3 server whose requests a test can hold back (and let go)."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.flowing.set()
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, held: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    if held:
                        await self.flowing.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


def _plain_url(settings: Settings) -> str:
    return async_database_url(settings.database_url).replace("postgresql+asyncpg", "postgresql")


async def _waiting_for_key_locks(connection: asyncpg.Connection) -> int:
    return int(
        await connection.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    )


async def _until_waiting(connection: asyncpg.Connection, count: int, *tasks: Any) -> None:
    deadline = time.monotonic() + 120  # a photo's processing, on a loaded machine
    while await _waiting_for_key_locks(connection) < count:
        for task in tasks:
            if task.done():
                task.result()  # (raises what it raised)
                raise AssertionError(f"{task!r} ended without waiting for the key's lock")
        assert time.monotonic() < deadline, "nobody lined up behind the key's lock"
        await asyncio.sleep(0.05)


def _keys(post: dict[str, Any]) -> list[str]:
    return sorted(
        v["url"].removeprefix("/media/").split("?")[0] for m in post["media"] for v in m["variants"]
    )


@pytest.mark.parametrize("first", ["purge", "recording"])
async def test_a_purge_racing_a_recording_of_the_same_object_leaves_it_stored(
    glimpse: Glimpse, other_worker: Container, settings: Settings, first: str
) -> None:
    headers = await glimpse.signup()
    photo = jpeg_bytes((1200, 900))
    old = await glimpse.upload(headers, files=[("a.jpg", photo)])
    await glimpse.run_jobs()
    old_post = (
        await glimpse.client.get(f"/api/v1/posts/{old.json()['id']}", headers=headers)
    ).json()
    keys = _keys(old_post)
    assert old_post["status"] == "ready" and keys
    new = await glimpse.upload(headers, files=[("b.jpg", photo)])
    assert new.status_code == 202
    deleted = await glimpse.client.delete(f"/api/v1/posts/{old.json()['id']}", headers=headers)
    assert deleted.status_code == 204
    # Both take the keys' locks in one order (db/locks.py): the first in it is the gate.
    key = min(keys, key=lock_number)

    gate = await asyncpg.connect(_plain_url(settings))
    try:
        async with gate.transaction():
            await gate.execute("SELECT pg_advisory_xact_lock($1)", lock_number(key))
            # The purge runs in this container, the processing job of the new post in the other.
            purge = lambda: purge_media_keys(glimpse.container, {"keys": keys})  # noqa: E731
            record = lambda: drain(other_worker)  # noqa: E731
            order = [purge, record] if first == "purge" else [record, purge]
            tasks: list[asyncio.Task[Any]] = []
            for waiting, start in enumerate(order, 1):
                tasks.append(asyncio.ensure_future(start()))
                await _until_waiting(gate, waiting, *tasks)
        # (the gate's lock goes with its transaction: they go through in line)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    finally:
        await gate.close()

    post = (await glimpse.client.get(f"/api/v1/posts/{new.json()['id']}", headers=headers)).json()
    assert post["status"] == "ready"
    assert _keys(post) == keys  # the same bytes, the same keys
    for stored in keys:
        assert await glimpse.container.storage.size(stored) is not None, stored
    async with glimpse.container.db.read() as session:
        assert await repository.marked_deleting(session, keys) == set()


async def test_a_recording_made_while_a_purge_deletes_stores_its_files_again(
    glimpse: Glimpse, other_worker: Container, settings: Settings, s3_server: S3Server
) -> None:
    headers = await glimpse.signup()
    photo = jpeg_bytes((1200, 900))
    old = await glimpse.upload(headers, files=[("a.jpg", photo)])
    await glimpse.run_jobs()
    old_post = (
        await glimpse.client.get(f"/api/v1/posts/{old.json()['id']}", headers=headers)
    ).json()
    keys = _keys(old_post)
    new = await glimpse.upload(headers, files=[("b.jpg", photo)])
    deleted = await glimpse.client.delete(f"/api/v1/posts/{old.json()['id']}", headers=headers)
    assert deleted.status_code == 204

    relay = HeldRelay(s3_server.endpoint)
    await relay.start()
    bucket = urlsplit(settings.storage_url).netloc
    purger = build_container(
        settings.model_copy(
            update={"storage_url": f"s3://{bucket}?endpoint=http://127.0.0.1:{relay.port}"}
        )
    )
    await purger.start()
    try:
        relay.flowing.clear()
        # It decides, marks and commits, then its delete waits in the relay.
        purge = asyncio.ensure_future(purge_media_keys(purger, {"keys": keys}))
        deadline = time.monotonic() + 60
        while await _marked(purger, keys) != set(keys):
            assert time.monotonic() < deadline and not purge.done()
            await asyncio.sleep(0.05)
        record = asyncio.ensure_future(drain(other_worker))
        deadline = time.monotonic() + 120
        while await _status(glimpse, headers, new.json()["id"]) != "ready":
            assert time.monotonic() < deadline and not record.done()
            await asyncio.sleep(0.05)
        # Recorded. Its job now waits for the purge; one that did not would find the files
        # still there and be done in a moment: give it that moment (no timing is asserted).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(record), timeout=5)
        relay.flowing.set()
        await asyncio.wait_for(asyncio.gather(purge, record), timeout=120)
    finally:
        await relay.close()
        await purger.close()

    for stored in keys:
        assert await glimpse.container.storage.size(stored) is not None, stored
    async with glimpse.container.db.read() as session:
        assert await repository.marked_deleting(session, keys) == set()


async def _marked(container: Container, keys: list[str]) -> set[str]:
    async with container.db.read() as session:
        return await repository.marked_deleting(session, keys)


async def _status(glimpse: Glimpse, headers: dict[str, str], post_id: str) -> str:
    response = await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=headers)
    return str(response.json()["status"])
