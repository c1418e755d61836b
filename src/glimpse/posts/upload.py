"""Reads a multipart upload as it streams in, spooling each file to disk.

Starlette's `request.form()` would read the whole body before we could look at it. Here each file
is sniffed from its first bytes and counted as it arrives, so a file of the wrong type or over the
size limit is refused the moment that is known, with nothing read past that point.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from glimpse.config import Settings
from glimpse.errors import (
    DomainError,
    Malformed,
    Stalled,
    StorageUnavailable,
    Throttled,
    TooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from glimpse.media.images import UndecodableImage, read_image_header
from glimpse.media.sniff import SNIFF_BYTES, MediaType, is_video, sniff_media_type

if TYPE_CHECKING:  # (python-multipart declares it for type checkers only)
    from python_multipart.multipart import MultipartCallbacks

# Text fields are small (a caption is at most 2,200 characters of up to 4 bytes each).
MAX_FIELD_BYTES = 16 * 1024
MAX_PARTS = 64
# Once this much of a file has arrived its header is almost always complete (a JPEG's size
# follows its EXIF block, at most 64 KB): a pixel bomb is refused then, not after 50 MB.
# A header that is not complete yet (large APP segments, a HEIC with its `meta` box after the
# pixels) is looked for again each time four times as much has arrived.
HEADER_PROBE_BYTES = 256 * 1024
HEADER_PROBE_GROWTH = 4
# The hourly sweep removes spooled files nobody has written for an hour (uploads cut off by a
# crash). A long upload's finished files wait unwritten for the rest of the body, so they are
# touched this often while it arrives.
KEEP_FRESH_SECONDS = 60.0
# When to try again after "too many uploads at once" and "the staging disk failed".
BUSY_RETRY_AFTER_SECONDS = 10


class UploadPace:
    """Whether an upload keeps up: it must end within its deadline and, once its grace period
    is over, bring at least `min_rate` bytes a second averaged over the last `window` seconds.

    The idle timeout alone restarts with every byte: one byte every 40 s held a connection and
    its spooled files forever. Arrivals are summed in buckets of a sixtieth of the window, so
    the memory it takes does not grow with the number of chunks."""

    BUCKETS_PER_WINDOW = 60

    def __init__(
        self,
        *,
        deadline: float,
        min_rate: int,
        window: float,
        grace: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deadline = deadline
        self.min_rate = min_rate
        self.window = window
        self.grace = grace
        self._clock = clock
        self._started = clock()
        self._bucket_seconds = window / self.BUCKETS_PER_WINDOW
        self._buckets: deque[list[int]] = deque()  # [bucket index, bytes]

    def elapsed(self) -> float:
        return self._clock() - self._started

    def time_left(self) -> float:
        return self.deadline - self.elapsed()

    def arrived(self, size: int) -> None:
        """Note `size` bytes arriving now; raises Stalled when the upload is too slow."""
        elapsed = self.elapsed()
        index = math.floor(elapsed / self._bucket_seconds)
        if self._buckets and self._buckets[-1][0] == index:
            self._buckets[-1][1] += size
        else:
            self._buckets.append([index, size])
        oldest = index - self.BUCKETS_PER_WINDOW
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()
        self.check()

    def check(self) -> None:
        elapsed = self.elapsed()
        if elapsed >= self.deadline:
            raise Stalled(
                f"The upload did not finish within {self.deadline:g} seconds.",
                code="upload_too_slow",
            )
        if self.min_rate <= 0 or elapsed < self.grace:
            return
        span = min(self.window, elapsed)
        first = math.floor((elapsed - span) / self._bucket_seconds)
        arrived = sum(size for index, size in self._buckets if index >= first)
        if arrived < self.min_rate * span:
            raise Stalled(
                f"The upload is arriving too slowly: {arrived / span:.0f} bytes a second over "
                f"the last {span:g} seconds, below the {self.min_rate} it needs.",
                code="upload_too_slow",
            )


class UploadSlots:
    """How many uploads this process is receiving, against a cap: each holds a connection,
    spooled files and a file descriptor, so past the cap a new one is turned away before its
    body is read rather than let the process run out of them. One uploader (an account) may
    hold only its own share of them, so that a few accounts sending just fast enough cannot
    keep everyone else out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.taken = 0
        self._by_uploader: Counter[str] = Counter()

    @contextlib.contextmanager
    def take(self, limit: int, uploader: str = "", per_uploader: int = 0) -> Iterator[None]:
        with self._lock:
            if self.taken >= limit:
                raise Unavailable(
                    "The server is receiving as many uploads as it can; please try again soon.",
                    retry_after=BUSY_RETRY_AFTER_SECONDS,
                    code="busy",
                )
            if uploader and per_uploader and self._by_uploader[uploader] >= per_uploader:
                raise Throttled(
                    f"You are already sending {per_uploader} uploads; please wait for one"
                    " to finish.",
                    retry_after=BUSY_RETRY_AFTER_SECONDS,
                )
            self.taken += 1
            if uploader:
                self._by_uploader[uploader] += 1
        try:
            yield
        finally:
            with self._lock:
                self.taken -= 1
                if uploader:
                    self._by_uploader[uploader] -= 1
                    if self._by_uploader[uploader] <= 0:
                        del self._by_uploader[uploader]


# One per process: the cap is on what this process holds, whichever app instance reads it.
UPLOAD_SLOTS = UploadSlots()


@dataclass
class StagedFile:
    path: Path
    media_type: MediaType
    size: int
    filename: str


@dataclass
class UploadForm:
    files: list[StagedFile] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)

    def discard(self) -> None:
        for f in self.files:
            # A read-only or failing disk must not turn the answer into a 500: what cannot be
            # removed now, the hourly sweep of spooled files removes later.
            with contextlib.suppress(OSError):
                f.path.unlink(missing_ok=True)

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None


class _Reader:
    def __init__(self, settings: Settings, staging: Path, max_files: int) -> None:
        self.settings = settings
        self.max_files = max_files
        self.staging = staging
        self.form = UploadForm()
        self.parts = 0
        self.finished = False
        self._header_field = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._filename = ""
        self._file: IO[bytes] | None = None
        self._file_path: Path | None = None
        self._head = b""
        self._size = 0
        self._media_type: MediaType | None = None
        self._next_probe = HEADER_PROBE_BYTES
        # The file whose header is to be read before the parser is given more of the body.
        self.probe_due: Path | None = None
        self._value = bytearray()
        self._touched = time.monotonic()

    # python-multipart calls these synchronously from parser.write().
    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise TooLarge("The upload has too many parts.", code="too_many_parts")
        self._headers = {}
        self._header_field = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        key = self._header_field.lower()
        self._headers[key] = self._headers.get(key, b"") + data[start:end]

    def on_header_end(self) -> None:
        self._header_field = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        self._filename = options.get(b"filename", b"").decode("utf-8", "replace")
        if not self._name:
            raise Malformed(
                "Every part of the upload needs a name (file, caption, filter or alt_text).",
                code="malformed_multipart",
            )
        self._value = bytearray()
        if self._name == "file":
            if len(self.form.files) >= self.max_files:
                raise TooLarge(
                    f"This upload takes at most {self.max_files} file(s).",
                    code="too_many_files",
                )
            fd, path = tempfile.mkstemp(dir=self.staging, prefix="upload-")
            self._file = os.fdopen(fd, "wb")
            self._file_path = Path(path)
            self._head = b""
            self._size = 0
            self._media_type = None
            self._next_probe = HEADER_PROBE_BYTES

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        self._keep_staged_files_fresh()
        if self._file is None:
            self._value += chunk
            if len(self._value) > MAX_FIELD_BYTES:
                raise TooLarge(f"The field {self._name!r} is too long.", code="field_too_large")
            return
        self._size += len(chunk)
        if self._media_type is None:
            self._head += chunk[: SNIFF_BYTES - len(self._head)]
            if len(self._head) >= SNIFF_BYTES:
                self._media_type = self._sniff()
        if self._media_type is not None and is_video(self._media_type):
            if self._size > self.settings.max_video_bytes:
                raise TooLarge(
                    f"A video may be at most {self.settings.max_video_bytes // (1024 * 1024)} MB.",
                    code="file_too_large",
                )
        elif self._size > self.settings.max_image_bytes:
            raise TooLarge(
                f"A photo may be at most {self.settings.max_image_bytes // (1024 * 1024)} MB.",
                code="file_too_large",
            )
        self._file.write(chunk)
        if self._size >= self._next_probe:
            self._next_probe = self._size * HEADER_PROBE_GROWTH
            self._file.flush()
            self.probe_due = self._file_path

    def _keep_staged_files_fresh(self) -> None:
        now = time.monotonic()
        if now - self._touched < KEEP_FRESH_SECONDS:
            return
        self._touched = now
        # (The file arriving too: its writes are buffered, and do not always reach it.)
        arriving = [self._file_path] if self._file is not None and self._file_path else []
        for path in [*(staged.path for staged in self.form.files), *arriving]:
            with contextlib.suppress(OSError):
                os.utime(path)

    def probe_header(self, path: Path) -> None:
        """Refuse a pixel bomb from the part of it that has arrived (in a thread: some headers
        take milliseconds to parse). Runs between two writes to the parser, so the file is not
        growing meanwhile; if its part has ended since, the final check is enough."""
        if self._file is None or self._file_path != path:
            return
        try:
            header = read_image_header(path)
        except UndecodableImage:
            return  # the header lies further on; it is looked for again later
        self._next_probe = self.settings.max_image_bytes + 1  # found: no need to look again
        if header.width * header.height > self.settings.max_image_pixels:
            raise too_many_pixels(self.settings.max_image_pixels)

    def _sniff(self) -> MediaType:
        media_type = sniff_media_type(self._head)
        if media_type is None:
            raise UnsupportedMediaType(
                f"{self._filename or 'A file'} is not a JPEG, PNG, WebP, HEIC or GIF image, nor"
                " an MP4, MOV or WebM video.",
                code="unsupported_media_type",
            )
        if is_video(media_type):
            # A video's length and size are read from its whole file once it has arrived (its
            # index often comes last), in a decoding child: no image header to look for.
            self._next_probe = self.settings.max_video_bytes + 1
        return media_type

    def on_part_end(self) -> None:
        if self._file is not None:
            assert self._file_path is not None
            self._file.close()
            self._file = None
            staged = StagedFile(self._file_path, MediaType.JPEG, self._size, self._filename)
            # Put it in the form before sniffing, so a refusal still cleans the file up.
            self.form.files.append(staged)
            if self._media_type is None:  # shorter than SNIFF_BYTES
                self._media_type = self._sniff()
            staged.media_type = self._media_type
        else:
            try:
                value = self._value.decode("utf-8")
            except UnicodeDecodeError:
                raise Malformed(f"The field {self._name!r} is not UTF-8.") from None
            self.form.fields.setdefault(self._name, []).append(value)

    def on_end(self) -> None:
        self.finished = True

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):  # its last writes may fail as the others did
                self._file.close()
            assert self._file_path is not None
            self._file_path.unlink(missing_ok=True)


def too_many_pixels(limit: int) -> TooLarge:
    return TooLarge(
        f"An image may have at most {limit // 1_000_000} megapixels.", code="too_many_pixels"
    )


def boundary_of(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise UnsupportedMediaType(
            "Send the upload as multipart/form-data.", code="unsupported_media_type"
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise Malformed("The multipart body has no boundary.", code="malformed_multipart")
    return boundary


async def _arriving(
    body: AsyncIterator[bytes], idle_timeout: float, pace: UploadPace
) -> AsyncIterator[bytes]:
    """The body's chunks, as long as each arrives within `idle_timeout` of the one before and
    the whole keeps the pace."""
    chunks = aiter(body)
    while True:
        wait = min(idle_timeout, pace.time_left())
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            pace.check()  # past the deadline: says so
            raise Stalled(
                f"The upload stalled: nothing arrived for {idle_timeout:g} seconds."
            ) from None
        pace.arrived(len(chunk))
        yield chunk


def _callbacks(reader: _Reader) -> MultipartCallbacks:
    return {
        "on_part_begin": reader.on_part_begin,
        "on_part_data": reader.on_part_data,
        "on_part_end": reader.on_part_end,
        "on_header_field": reader.on_header_field,
        "on_header_value": reader.on_header_value,
        "on_header_end": reader.on_header_end,
        "on_headers_finished": reader.on_headers_finished,
        "on_end": reader.on_end,
    }


async def read_upload(
    content_type: str,
    body: AsyncIterator[bytes],
    settings: Settings,
    staging: Path,
    uploader: str = "",
    max_files: int | None = None,
) -> UploadForm:
    """Parse the body into spooled files and text fields. On any error every spooled file is
    removed before the error propagates; every error raised here comes before the body was read
    to its end, so it asks for the connection to be closed. `max_files` (a story's one) is
    settings.max_files_per_post unless given."""
    try:
        with UPLOAD_SLOTS.take(
            settings.max_concurrent_uploads, uploader, settings.max_concurrent_uploads_per_account
        ):
            return await _read_upload(
                content_type, body, settings, staging, max_files or settings.max_files_per_post
            )
    except DomainError as exc:
        exc.headers = {**(exc.headers or {}), "Connection": "close"}
        raise


async def _read_upload(
    content_type: str,
    body: AsyncIterator[bytes],
    settings: Settings,
    staging: Path,
    max_files: int,
) -> UploadForm:
    boundary = boundary_of(content_type)
    pace = UploadPace(
        deadline=settings.upload_deadline_seconds,
        min_rate=settings.upload_min_rate_bytes_per_second,
        window=settings.upload_min_rate_window_seconds,
        grace=settings.upload_min_rate_grace_seconds,
    )
    reader = _Reader(settings, staging, max_files)
    try:
        parser = MultipartParser(boundary, _callbacks(reader))
    except (FormParserError, ValueError) as exc:  # say, a boundary over 256 bytes
        raise Malformed(
            f"The multipart body is malformed: {exc}", code="malformed_multipart"
        ) from exc
    try:
        async for chunk in _arriving(body, settings.upload_idle_timeout_seconds, pace):
            if chunk:
                parser.write(chunk)
            if reader.probe_due is not None:
                path, reader.probe_due = reader.probe_due, None
                await asyncio.to_thread(reader.probe_header, path)
        parser.finalize()
        if not reader.finished:
            raise Malformed("The multipart body ended early.", code="malformed_multipart")
    except FormParserError as exc:
        reader.close()
        reader.form.discard()
        raise Malformed(
            f"The multipart body is malformed: {exc}", code="malformed_multipart"
        ) from exc
    except OSError as exc:
        # Spooling failed: a full or read-only disk, an I/O error, no file descriptor left.
        # The server's trouble, and usually a passing one.
        reader.close()
        reader.form.discard()
        raise StorageUnavailable(
            "The server cannot store uploads right now; please try again later.",
            retry_after=StorageUnavailable.RETRY_AFTER_SECONDS,
        ) from exc
    except BaseException:
        reader.close()
        reader.form.discard()
        raise
    return reader.form


@contextlib.contextmanager
def discarding(form: UploadForm) -> Iterator[UploadForm]:
    """Remove whatever spooled files are still staged when the block ends."""
    try:
        yield form
    finally:
        form.discard()
