"""One contract every object store passes: the local disk and an S3-compatible bucket (moto's
server, started by the tests). What the application relies on, whatever URL it was given."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from glimpse.backends.storage import InvalidKey, ObjectMissing, Storage, storage_from_url
from tests.s3server import S3Server

# Past the S3 store's multipart threshold (16 MB), so fetches of a multipart object are covered.
LARGE = 17 * 1024 * 1024 + 123


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "local":
        url = f"file://{tmp_path / 'media'}"
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        url = server.storage_url()
    storage = storage_from_url(url, staging_dir=tmp_path / "staging")
    await storage.start()
    try:
        yield storage
    finally:
        await storage.close()


async def _collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def test_put_then_get_returns_the_bytes_and_overwrite_replaces_them(store: Storage) -> None:
    await store.put_bytes("v/ab/photo.jpg", b"first", "image/jpeg")
    assert await store.get_bytes("v/ab/photo.jpg") == b"first"

    await store.put_bytes("v/ab/photo.jpg", b"second version", "image/jpeg")

    assert await store.get_bytes("v/ab/photo.jpg") == b"second version"
    assert await store.size("v/ab/photo.jpg") == len(b"second version")


async def test_readers_never_see_half_an_object_while_it_is_overwritten(store: Storage) -> None:
    old, new = b"a" * 300_000, b"b" * 400_000
    await store.put_bytes("v/ab/race.jpg", old, "image/jpeg")

    async def read_many() -> set[bytes]:
        seen = set()
        for _ in range(20):
            seen.add(await store.get_bytes("v/ab/race.jpg"))
        return seen

    reads = asyncio.create_task(read_many())
    for _ in range(5):
        await store.put_bytes("v/ab/race.jpg", new, "image/jpeg")
        await store.put_bytes("v/ab/race.jpg", old, "image/jpeg")

    assert await reads <= {old, new}


async def test_a_missing_object_is_missing_everywhere(store: Storage) -> None:
    with pytest.raises(ObjectMissing):
        await store.get_bytes("v/ab/nothing.jpg")
    with pytest.raises(ObjectMissing):
        await store.fetch_to_file("v/ab/nothing.jpg", store.staging_dir() / "fetched")
    with pytest.raises(ObjectMissing):
        await store.open_range("v/ab/nothing.jpg", 0, 10)
    assert await store.size("v/ab/nothing.jpg") is None


async def test_delete_removes_the_object_and_is_idempotent(store: Storage) -> None:
    await store.put_bytes("v/ab/gone.jpg", b"x", "image/jpeg")

    await store.delete("v/ab/gone.jpg")
    await store.delete("v/ab/gone.jpg")  # (a retried delete)

    assert await store.size("v/ab/gone.jpg") is None


async def test_delete_many_removes_thousands_of_objects_and_keeps_the_rest(
    store: Storage,
) -> None:
    keys = [f"v/{i % 7:02x}/k{i:05d}.jpg" for i in range(1205)]
    await asyncio.gather(*(store.put_bytes(k, b"x", "image/jpeg") for k in keys))
    await store.put_bytes("v/00/kept.jpg", b"kept", "image/jpeg")

    # Past one DeleteObjects call of 1,000 keys, with a missing key and a repeat among them.
    await store.delete_many([*keys, "v/00/never-stored.jpg", keys[0]])

    assert all(await asyncio.gather(*(_absent(store, k) for k in keys[::50])))
    assert await store.get_bytes("v/00/kept.jpg") == b"kept"
    assert await store.list_keys("v") == ["v/00/kept.jpg"]


async def _absent(store: Storage, key: str) -> bool:
    return await store.size(key) is None


async def test_list_keys_pages_through_more_than_a_thousand_keys_under_a_prefix_only(
    store: Storage,
) -> None:
    keys = [f"originals/2026120413/{i:06d}/1" for i in range(1100)]
    await asyncio.gather(*(store.put_bytes(k, b"o", "image/jpeg") for k in keys))
    await store.put_bytes("originals/2026120414/1/1", b"o", "image/jpeg")
    await store.put_bytes("originals/20261204130/1/1", b"o", "image/jpeg")  # a longer sibling

    assert await store.list_keys("originals/2026120413") == sorted(keys)
    assert await store.list_keys("originals/2026120413/") == sorted(keys)
    assert await store.list_keys("originals/1999010100") == []


async def test_put_file_consumes_the_spooled_file_and_fetch_streams_a_large_object_back(
    store: Storage,
) -> None:
    data = os.urandom(LARGE)
    spooled = store.staging_dir() / "upload-1"
    spooled.write_bytes(data)

    await store.put_file("originals/2026120413/1/1", spooled, "video/mp4")

    assert not spooled.exists()
    assert await store.size("originals/2026120413/1/1") == LARGE
    fetched = store.staging_dir() / "fetched-1"
    await store.fetch_to_file("originals/2026120413/1/1", fetched)
    assert fetched.read_bytes() == data


async def test_open_range_streams_exactly_the_bytes_asked_for(store: Storage) -> None:
    data = os.urandom(1_000_000)
    await store.put_bytes("v/ab/clip.mp4", data, "video/mp4")

    assert await _collect(await store.open_range("v/ab/clip.mp4", 0, len(data))) == data
    assert await _collect(await store.open_range("v/ab/clip.mp4", 123, 4567)) == data[123:4690]
    assert await _collect(await store.open_range("v/ab/clip.mp4", len(data) - 1, 1)) == data[-1:]


@pytest.mark.parametrize("key", ["../etc/passwd", "v/../../x", "/abs", "v//x", "", "v/a b"])
async def test_keys_that_could_escape_the_store_are_refused(store: Storage, key: str) -> None:
    with pytest.raises(InvalidKey):
        await store.put_bytes(key, b"x", "image/jpeg")
    with pytest.raises((InvalidKey, ObjectMissing)):
        await store.get_bytes(key)
    with pytest.raises(InvalidKey):
        await store.delete_many(["v/ab/fine.jpg", key])


async def test_check_answers_when_the_store_works(store: Storage) -> None:
    await store.check()


async def test_sweep_staging_removes_only_files_nobody_wrote_to_for_an_hour(
    store: Storage,
) -> None:
    stale, fresh = store.staging_dir() / "stale", store.staging_dir() / "fresh"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    two_hours_ago = stale.stat().st_mtime - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    assert await store.sweep_staging() == 1

    assert not stale.exists() and fresh.exists()


async def test_an_object_url_is_none_or_serves_the_object(store: Storage) -> None:
    await store.put_bytes("v/ab/linked.jpg", b"linked bytes", "image/jpeg")

    url = await store.object_url("v/ab/linked.jpg", 60)

    if url is not None:  # a store with URLs of its own: the signed one serves the bytes
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).content == b"linked bytes"
