"""What only the S3 store does: its URL, the bucket made at start, multipart uploads of large
originals, and a store that does not answer (503 upstream, never a hang or a 500)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from glimpse.backends.storage import ObjectMissing, Storage, storage_from_url
from glimpse.backends.storage.s3 import S3Location, S3Storage, _store_faults
from glimpse.errors import StorageUnavailable
from tests.s3server import S3Server
from tests.servers import free_port


def test_the_url_names_the_bucket_the_endpoint_the_region_and_the_addressing() -> None:
    location = S3Location.from_url(
        "s3://media?endpoint=http://127.0.0.1:9000&region=eu-west-3&addressing=virtual"
    )
    assert location == S3Location("media", "http://127.0.0.1:9000", "eu-west-3", "virtual")
    assert S3Location.from_url("s3://media?read_timeout=2.5").read_timeout == 2.5
    assert S3Location.from_url("s3://media") == S3Location("media", None, None, "path")
    with pytest.raises(ValueError):
        S3Location.from_url("s3://?endpoint=http://x")
    with pytest.raises(ValueError):
        S3Location.from_url("s3://media?addressing=sideways")


async def test_the_bucket_is_created_at_start_and_start_is_idempotent(
    s3_server: S3Server, tmp_path: Path
) -> None:
    url = s3_server.storage_url()
    first = storage_from_url(url, staging_dir=tmp_path / "a")
    await first.start()
    await first.put_bytes("v/ab/x.jpg", b"x", "image/jpeg")
    # A second process on the same bucket finds it there and keeps what it holds.
    second = storage_from_url(url, staging_dir=tmp_path / "b")
    await second.start()
    try:
        await second.check()
        assert await second.get_bytes("v/ab/x.jpg") == b"x"
    finally:
        await first.close()
        await second.close()


async def test_a_large_original_goes_up_in_parts_and_comes_back_whole(
    s3_server: S3Server, tmp_path: Path
) -> None:
    storage = storage_from_url(s3_server.storage_url(), staging_dir=tmp_path / "staging")
    assert isinstance(storage, S3Storage)
    data = os.urandom(20 * 1024 * 1024 + 5)
    spooled = storage.staging_dir() / "upload"
    spooled.write_bytes(data)
    try:
        await storage.put_file("originals/2026120413/1/2", spooled, "video/mp4")

        s3 = await storage._s3()
        head = await s3.head_object(Bucket=storage.bucket, Key="originals/2026120413/1/2")
        assert head["ETag"].strip('"').endswith("-3")  # three parts of 8 MB at most
        assert head["ContentType"] == "video/mp4"
        assert await storage.get_bytes("originals/2026120413/1/2") == data
        # No upload is left half done.
        uploads = await s3.list_multipart_uploads(Bucket=storage.bucket)
        assert uploads.get("Uploads", []) == []
    finally:
        await storage.close()


async def test_a_multipart_upload_that_fails_midway_is_aborted_and_its_file_kept(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The parts of an upload nobody completes are billed until it is aborted.
    storage = S3Storage(
        S3Location.from_url(s3_server.storage_url()),
        tmp_path / "staging",
        multipart_threshold=5 * 1024 * 1024,
        part_size=5 * 1024 * 1024,
    )
    spooled = storage.staging_dir() / "upload"
    spooled.write_bytes(os.urandom(11 * 1024 * 1024))
    try:
        s3 = await storage._s3()
        upload_part = s3.upload_part
        parts = 0

        async def failing_second_part(**kwargs: object) -> object:
            nonlocal parts
            parts += 1
            if parts == 2:
                raise _client_error("InternalError", 500)
            return await upload_part(**kwargs)

        monkeypatch.setattr(s3, "upload_part", failing_second_part)
        with pytest.raises(StorageUnavailable):
            await storage.put_file("originals/2026120413/1/3", spooled, "video/mp4")
        assert parts == 2
        uploads = await s3.list_multipart_uploads(Bucket=storage.bucket)
        assert uploads.get("Uploads", []) == []
        assert await storage.size("originals/2026120413/1/3") is None
        assert spooled.exists()  # for the job's retry
    finally:
        await storage.close()


async def test_a_bucket_gone_from_under_the_store_is_unavailable_for_reads_and_writes(
    s3_server: S3Server, tmp_path: Path
) -> None:
    # S3 answers 404 (NoSuchBucket): that is no missing object of a caller's, but the store's
    # trouble, for an operator to fix.
    storage = storage_from_url(s3_server.storage_url(), staging_dir=tmp_path / "staging")
    try:
        await storage.start()
        assert isinstance(storage, S3Storage)
        s3 = await storage._s3()
        await s3.delete_bucket(Bucket=storage.bucket)
        for call in (
            storage.get_bytes("v/ab/x.jpg"),
            storage.put_bytes("v/ab/x.jpg", b"x", "image/jpeg"),
            storage.delete("v/ab/x.jpg"),
            storage.delete_many(["v/ab/x.jpg"]),
            storage.list_keys("v/ab"),
        ):
            with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
                await call
    finally:
        await storage.close()


async def test_a_store_that_does_not_answer_is_storage_unavailable_not_a_hang(
    tmp_path: Path,
) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "x")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "x")
    nobody = f"s3://media?endpoint=http://127.0.0.1:{free_port()}"
    storage = storage_from_url(nobody, staging_dir=tmp_path / "staging")
    try:
        for call in (
            storage.start(),
            storage.check(),
            storage.put_bytes("v/ab/x.jpg", b"x", "image/jpeg"),
            storage.get_bytes("v/ab/x.jpg"),
            storage.size("v/ab/x.jpg"),
            storage.delete_many(["v/ab/x.jpg"]),
        ):
            # (the guard only stops a hang from hanging the run; it times nothing)
            with pytest.raises(StorageUnavailable) as caught:
                await asyncio.wait_for(call, timeout=60)
            assert int(caught.value.headers["Retry-After"]) >= 1
    finally:
        await storage.close()


async def test_a_store_that_accepts_connections_but_never_answers_is_storage_unavailable(
    tmp_path: Path,
) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "x")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "x")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections are accepted by the kernel, and never read
    port = silent.getsockname()[1]
    url = f"s3://media?endpoint=http://127.0.0.1:{port}&read_timeout=0.5&connect_timeout=0.5"
    storage = storage_from_url(url, staging_dir=tmp_path / "staging")
    try:
        with pytest.raises(StorageUnavailable):
            await asyncio.wait_for(storage.get_bytes("v/ab/x.jpg"), timeout=60)
    finally:
        await storage.close()
        silent.close()


async def test_an_answer_without_the_fields_s3_sends_is_storage_unavailable(
    tmp_path: Path,
) -> None:
    # An "S3" that answers every request 200 and says nothing more: a HEAD without the
    # object's length (as a proxy in front of a store did in the fault suite) is the store's
    # trouble, a 503 to a client, not a KeyError and a 500.
    def answer(head: bytes) -> bytes:
        return (b"" if head.startswith(b"HEAD ") else b"Content-Length: 0\r\n") + b"\r\n"

    async with _answering_s3(answer, tmp_path) as storage:
        with pytest.raises(StorageUnavailable, match="KeyError"):
            await asyncio.wait_for(storage.size("v/ab/x.jpg"), timeout=60)


async def test_keys_a_batch_delete_could_not_remove_are_unavailable_not_gone(
    tmp_path: Path,
) -> None:
    # DeleteObjects answers 200 even when it removed none of the keys: those it could not
    # remove are in its Errors list. They are still there, so the purge that asked must try
    # again later (StorageUnavailable), not forget them as deleted.
    refused = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<Error><Key>v/ab/kept.jpg</Key><Code>AccessDenied</Code>"
        b"<Message>Access Denied</Message></Error></DeleteResult>"
    )

    def answer(head: bytes) -> bytes:
        body = refused if head.startswith(b"POST ") and b"delete" in head.split()[1] else b""
        return b"Content-Length: %d\r\n\r\n" % len(body) + body

    async with _answering_s3(answer, tmp_path) as storage:
        with pytest.raises(StorageUnavailable, match="AccessDenied"):
            await asyncio.wait_for(
                storage.delete_many(["v/ab/gone.jpg", "v/ab/kept.jpg"]), timeout=60
            )


@contextlib.asynccontextmanager
async def _answering_s3(answer: Callable[[bytes], bytes], tmp_path: Path) -> AsyncIterator[Storage]:
    """A store over an "S3" on 127.0.0.1 that answers every request 200 OK, followed by what
    `answer` gives for the request's head (the rest of the headers, a blank line, a body)."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "x")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "x")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\n" + answer(head))
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    storage = storage_from_url(
        f"s3://media?endpoint=http://127.0.0.1:{port}", staging_dir=tmp_path / "staging"
    )
    try:
        yield storage
    finally:
        await storage.close()
        server.close()


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("SlowDown", 503),
        ("InternalError", 500),
        ("AccessDenied", 403),
        ("RequestTimeout", 400),
        # MinIO's full disk (the fault suite's full bucket)
        ("XMinioStorageFull", 507),
    ],
)
def test_faults_of_the_store_are_storage_unavailable(code: str, status: int) -> None:
    with pytest.raises(StorageUnavailable, match=code), _store_faults("read files", "v/ab/x"):
        raise _client_error(code, status)


@pytest.mark.parametrize(("code", "status"), [("NoSuchKey", 404), ("404", 404)])
def test_a_missing_key_is_object_missing(code: str, status: int) -> None:
    with pytest.raises(ObjectMissing), _store_faults("read files", "v/ab/x"):
        raise _client_error(code, status)
