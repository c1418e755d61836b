"""The S3 store in front of a full bucket (MinIO's 507 `XMinioStorageFull`, over the wire): every
kind of write is StorageUnavailable, the project's "full, try again later" (a 503 to a client, a
retry for a job), while reads still answer; an answer lacking the length S3 always sends is the
store's trouble too, never a KeyError."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from glimpse.backends.storage.s3 import S3Location, S3Storage
from glimpse.errors import StorageUnavailable
from tests.full_bucket import FullableBucketProxy, full_bucket_fixture  # noqa: F401


def _store(proxy: FullableBucketProxy, staging: Path, **kwargs: int) -> S3Storage:
    url = f"s3://glimpse-{uuid.uuid4().hex[:12]}?endpoint={proxy.endpoint}"
    return S3Storage(S3Location.from_url(url), staging, **kwargs)


async def test_a_full_bucket_refuses_every_write_as_storage_unavailable_and_still_reads(
    full_bucket: FullableBucketProxy, tmp_path: Path
) -> None:
    # Parts from the first byte: a full bucket refuses a multipart upload at its start.
    storage = _store(full_bucket, tmp_path / "staging", multipart_threshold=1)
    try:
        await storage.put_bytes("v/ab/earlier.jpg", b"earlier", "image/jpeg")
        full_bucket.full = True
        with pytest.raises(StorageUnavailable, match="XMinioStorageFull") as refused:
            await storage.put_bytes("v/ab/new.jpg", b"new", "image/jpeg")
        assert refused.value.status == 503
        assert int(refused.value.headers["Retry-After"]) >= 1  # type: ignore[index]
        spooled = tmp_path / "spooled"
        spooled.write_bytes(b"original")
        with pytest.raises(StorageUnavailable, match="XMinioStorageFull"):
            await storage.put_file("originals/ab/new", spooled, "image/jpeg")
        with pytest.raises(StorageUnavailable, match="XMinioStorageFull"):
            await storage.check()  # /readyz: a bucket that takes no writes is not ready
        assert full_bucket.refused == 3

        assert await storage.get_bytes("v/ab/earlier.jpg") == b"earlier"
        assert await storage.size("v/ab/earlier.jpg") == len(b"earlier")
        assert await storage.size("v/ab/new.jpg") is None

        full_bucket.full = False
        await storage.put_file("originals/ab/new", spooled, "image/jpeg")
        assert await storage.get_bytes("originals/ab/new") == b"original"
    finally:
        await storage.close()


@pytest.mark.parametrize("full_bucket", [{"head_lengths": False}], indirect=True)
async def test_a_head_answer_without_the_objects_length_is_storage_unavailable(
    full_bucket: FullableBucketProxy, tmp_path: Path
) -> None:
    # The fault suite's first proxy: every HEAD answered 200 without Content-Length, and the
    # store raised KeyError('ContentLength'), a 500 on media reads and a job failed for good.
    storage = _store(full_bucket, tmp_path / "staging")
    try:
        await storage.put_bytes("v/ab/x.jpg", b"bytes", "image/jpeg")
        with pytest.raises(StorageUnavailable, match="KeyError"):
            await storage.size("v/ab/x.jpg")
    finally:
        await storage.close()
