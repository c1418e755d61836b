"""A purge racing a processing job that records the same object again, on PostgreSQL over S3
(moto_server): two containers, each with its own connections, as two worker processes have.

Variant keys are content-addressed: a post deleted while another post of the same photo is being
processed leaves a purge of keys the second post is about to record. The purge decides under a
per-key advisory lock (db/locks.py) that the recording also takes. The test holds that lock
itself while the purge and the recording line up behind it (seen in pg_locks), then lets them
go in a chosen order: whichever order, the second post ends ready with every file in the bucket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

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
