"""Objects in an S3-compatible bucket (AWS S3, MinIO, Ceph, Garage, moto).

The store's promise is the same as the local one's: a PUT replaces an object whole (readers see
the old bytes or the new, never half), and an object the database points at was stored before
its row was committed. Credentials and the region come from the standard `AWS_*` environment
variables (or any other source botocore reads: ~/.aws, an instance role); the bucket is created
at start when it does not exist.

Faults of the store or the network (refused or cut connections, timeouts, 5xx, SlowDown, and
errors of configuration like a refused signature that an operator fixes) raise
StorageUnavailable, so the API answers 503 with Retry-After and the workers retry; a missing
object raises ObjectMissing.

Uploads are spooled on this machine's disk (a staging folder under the data folder) before they
are sent; originals of 16 MB and more go up in 8 MB parts, so a 200 MB video never passes
through memory whole and a failed part is retried alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from glimpse.backends.storage.base import ObjectMissing, check_key, write_probe
from glimpse.backends.storage.staging import sweep_stale_files
from glimpse.errors import StorageUnavailable

# Files this large go up as a multipart upload, in parts of this size (S3 wants parts of 5 MB
# at least, and at most 10,000 of them: 8 MB parts reach 80 GB, far past any upload here).
MULTIPART_THRESHOLD = 16 * 1024 * 1024
MULTIPART_PART_SIZE = 8 * 1024 * 1024
# DeleteObjects takes at most this many keys a call.
DELETE_BATCH = 1000
# Streams (the origin's ranges, fetches of originals) are read this much at a time.
STREAM_CHUNK = 256 * 1024

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# 404s that are not about an object: the bucket is gone (an operator's trouble, so 503, not a
# 404 for every photo), or a multipart upload is. (A HEAD has no body to say which: `size` of
# a key in a bucket that is gone still reads as missing.)
_STORE_GONE_CODES = frozenset({"NoSuchBucket", "NoSuchUpload"})


@dataclass(frozen=True)
class S3Location:
    """What GLIMPSE_STORAGE_URL says: `s3://bucket?endpoint=http://host:port&region=...`
    (`addressing=virtual` for stores that want bucket.host names; path-style otherwise, which
    every S3-compatible server understands; `connect_timeout=` and `read_timeout=` in seconds)."""

    bucket: str
    endpoint: str | None
    region: str | None
    addressing: str
    # Seconds to open a connection, and to wait for each read of an answer: a store that takes
    # longer is unavailable (503 to the client, a retry for a job).
    connect_timeout: float = 5.0
    read_timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str) -> S3Location:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"an S3 storage URL is s3://bucket?endpoint=...; got {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        addressing = query.get("addressing", "path")
        if addressing not in ("path", "virtual"):
            raise ValueError(f"addressing= is path or virtual; got {addressing!r}")
        try:
            timeouts = {
                name: float(query[name])
                for name in ("connect_timeout", "read_timeout")
                if name in query
            }
        except ValueError:
            raise ValueError(f"timeouts are seconds; got {url!r}") from None
        return cls(
            bucket=parsed.netloc,
            endpoint=query.get("endpoint") or None,
            region=query.get("region") or None,
            addressing=addressing,
            **timeouts,
        )


def _unavailable(exc: Exception, action: str) -> StorageUnavailable:
    reason = (
        exc.response.get("Error", {}).get("Code", "error")
        if isinstance(exc, ClientError)
        else type(exc).__name__
    )
    unavailable = StorageUnavailable(
        f"The media store cannot {action} now ({reason}); please try again later.",
        retry_after=StorageUnavailable.RETRY_AFTER_SECONDS,
    )
    unavailable.__cause__ = exc
    return unavailable


def _answered(answer: Mapping[str, Any], field: str, action: str) -> Any:
    """A field of the store's answer. An answer without it (an S3-compatible server, or a proxy
    in front of it, that answered with something other than S3's answer: a HEAD without its
    length, say) is the store's trouble: StorageUnavailable, as for an error it names."""
    try:
        return answer[field]
    except KeyError as exc:
        raise _unavailable(exc, action) from exc


def _is_missing(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if error.get("Code") in _STORE_GONE_CODES:
        return False
    return error.get("Code") in _MISSING_CODES or status == 404


@contextlib.contextmanager
def _store_faults(action: str, key: str | None = None) -> Iterator[None]:
    """ObjectMissing for a missing `key`, StorageUnavailable for anything the store did wrong."""
    try:
        yield
    except ClientError as exc:
        if key is not None and _is_missing(exc):
            raise ObjectMissing(key) from exc
        raise _unavailable(exc, action) from exc
    except (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        # (aiohttp's connection errors are OSErrors; botocore wraps most, not all, of them)
        raise _unavailable(exc, action) from exc


@functools.cache
def _session() -> AioSession:
    """One botocore session a process: each new one loads the service models again (80-140 ms
    a store, against 7 ms for a client of a shared one)."""
    return get_session()


def _read_part(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


class S3Storage:
    def __init__(
        self,
        location: S3Location,
        staging: Path,
        *,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = MULTIPART_PART_SIZE,
    ) -> None:
        self.location = location
        self.bucket = location.bucket
        self._staging = staging
        self._staging.mkdir(parents=True, exist_ok=True)
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._config = AioConfig(
            connect_timeout=location.connect_timeout,
            read_timeout=location.read_timeout,
            # A couple of quick retries ride out a dropped connection; a store that stays down
            # is the caller's to retry (a 503 to the client, a job retried later).
            retries={"max_attempts": 2, "mode": "standard"},
            s3={"addressing_style": location.addressing},
            max_pool_connections=32,
        )
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._opening = asyncio.Lock()
        self._bucket_ready = False

    async def _s3(self) -> Any:
        """The client, made on first use (nothing connects before the event loop runs), with
        the bucket created if missing."""
        if self._client is not None and self._bucket_ready:
            return self._client
        async with self._opening:
            if self._client is None:
                stack = contextlib.AsyncExitStack()
                session = _session()
                self._client = await stack.enter_async_context(
                    session.create_client(
                        "s3",
                        endpoint_url=self.location.endpoint,
                        region_name=self.location.region
                        or os.environ.get("AWS_REGION")
                        or os.environ.get("AWS_DEFAULT_REGION")
                        or "us-east-1",
                        config=self._config,
                    )
                )
                self._exit_stack = stack
            if not self._bucket_ready:
                await self._ensure_bucket(self._client)
                self._bucket_ready = True
        return self._client

    async def _ensure_bucket(self, client: Any) -> None:
        with _store_faults("reach its bucket"):
            try:
                await client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if not _is_missing(exc):
                    raise
            try:
                await client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                # Another process created it a moment ago.
                code = exc.response.get("Error", {}).get("Code")
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    async def start(self) -> None:
        await self._s3()

    async def close(self) -> None:
        if self._exit_stack is not None:
            await self._exit_stack.aclose()
        self._exit_stack = None
        self._client = None
        self._bucket_ready = False

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        check_key(key)
        s3 = await self._s3()
        with _store_faults("store files"):
            await s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        check_key(key)
        s3 = await self._s3()
        size = (await asyncio.to_thread(path.stat)).st_size
        with _store_faults("store files"):
            if size < self._multipart_threshold:
                data = await asyncio.to_thread(path.read_bytes)
                await s3.put_object(
                    Bucket=self.bucket, Key=key, Body=data, ContentType=content_type
                )
            else:
                await self._put_multipart(s3, key, path, size, content_type)
        # Consumed, as on the local store (where it is moved into place).
        with contextlib.suppress(OSError):
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def _put_multipart(
        self, s3: Any, key: str, path: Path, size: int, content_type: str
    ) -> None:
        upload = await s3.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=content_type
        )
        upload_id = _answered(upload, "UploadId", "store files")
        try:
            parts = []
            for number, offset in enumerate(range(0, size, self._part_size), start=1):
                # One part in memory at a time.
                data = await asyncio.to_thread(_read_part, path, offset, self._part_size)
                answer = await s3.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                )
                parts.append(
                    {"PartNumber": number, "ETag": _answered(answer, "ETag", "store files")}
                )
            # Until this call nobody sees the object: the old one (if any) stays whole.
            await s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            # Parts of an abandoned upload are billed until aborted (a bucket lifecycle rule
            # catches those that a crash leaves).
            with contextlib.suppress(Exception):
                await s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    async def get_bytes(self, key: str) -> bytes:
        check_key(key)
        s3 = await self._s3()
        with _store_faults("read files", key):
            answer = await s3.get_object(Bucket=self.bucket, Key=key)
            async with _answered(answer, "Body", "read files") as body:
                data: bytes = await body.read()
                return data

    async def fetch_to_file(self, key: str, path: Path) -> None:
        check_key(key)
        s3 = await self._s3()
        with _store_faults("read files", key):
            answer = await s3.get_object(Bucket=self.bucket, Key=key)
            async with _answered(answer, "Body", "read files") as body:
                with await asyncio.to_thread(path.open, "wb") as f:
                    async for chunk in body.iter_chunks(1024 * 1024):
                        await asyncio.to_thread(f.write, chunk)

    async def open_range(self, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        check_key(key)
        if length <= 0:
            return _no_bytes()
        s3 = await self._s3()
        with _store_faults("read files", key):
            answer = await s3.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}"
            )
        return _body_chunks(_answered(answer, "Body", "read files"))

    async def size(self, key: str) -> int | None:
        check_key(key)
        s3 = await self._s3()
        try:
            with _store_faults("read files", key):
                answer = await s3.head_object(Bucket=self.bucket, Key=key)
        except ObjectMissing:
            return None
        return int(_answered(answer, "ContentLength", "read files"))

    async def delete(self, key: str) -> None:
        check_key(key)
        s3 = await self._s3()
        with _store_faults("delete files"):
            # (S3 answers a delete of a missing key with success: deletes are retried)
            await s3.delete_object(Bucket=self.bucket, Key=key)

    async def delete_many(self, keys: Sequence[str]) -> None:
        for key in keys:
            check_key(key)  # (every key is refused before any object goes)
        if not keys:
            return
        s3 = await self._s3()
        unique = sorted(set(keys))
        with _store_faults("delete files"):
            for start in range(0, len(unique), DELETE_BATCH):
                batch = unique[start : start + DELETE_BATCH]
                answer = await s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
                errors = answer.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise StorageUnavailable(
                        f"The media store could not delete {len(errors)} objects"
                        f" ({first.get('Code')}: {first.get('Key')}); please try again later.",
                        retry_after=StorageUnavailable.RETRY_AFTER_SECONDS,
                    )

    async def list_keys(self, prefix: str) -> list[str]:
        folder = check_key(prefix.rstrip("/")) + "/"
        s3 = await self._s3()
        keys: list[str] = []
        with _store_faults("list files"):
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder)
            async for page in pages:
                keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    async def object_url(self, key: str, expires_in: int | None) -> str | None:
        check_key(key)
        s3 = await self._s3()
        if expires_in is None:
            # Where a GET without a signature finds it (a public bucket): path-style or not,
            # as botocore would address it.
            endpoint = s3.meta.endpoint_url.rstrip("/")
            if self.location.addressing == "virtual":
                scheme, _, host = endpoint.partition("://")
                return f"{scheme}://{self.bucket}.{host}/{key}"
            return f"{endpoint}/{self.bucket}/{key}"
        # Signed locally: no round trip to the store.
        with _store_faults("sign URLs"):
            url: str = await s3.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in
            )
        return url

    def local_path(self, key: str) -> Path | None:
        return None

    def staging_dir(self) -> Path:
        return self._staging

    async def sweep_staging(self) -> int:
        return await asyncio.to_thread(sweep_stale_files, self._staging)

    async def check(self) -> None:
        # A write and a read, as on the local disk: a bucket that answers but refuses writes
        # (a wrong policy, a full quota) cannot take uploads, so it is not ready.
        await write_probe(self)


async def _no_bytes() -> AsyncIterator[bytes]:
    return
    yield  # (an async generator that yields nothing)


async def _body_chunks(body: Any) -> AsyncIterator[bytes]:
    # The connection goes back to the pool (or is dropped) whether the client read it all,
    # hung up, or the store failed mid-way.
    try:
        with _store_faults("read files"):
            async for chunk in body.iter_chunks(STREAM_CHUNK):
                yield chunk
    finally:
        body.close()
