"""POST /api/v1/posts: what is refused, how, and that a refusal leaves nothing behind; and which
real-world files are accepted and processed (API.md, "Posts" and the upload limits)."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import time
import zipfile
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from glimpse.posts import upload
from glimpse.posts.upload import HEADER_PROBE_BYTES, HEADER_PROBE_GROWTH
from tests.conftest import Glimpse, assert_error, jpeg_bytes, testdata

BOUNDARY = "glimpse-test-boundary"


async def row_counts(glimpse: Glimpse) -> dict[str, int]:
    counts = {}
    async with glimpse.container.db.read() as s:
        for table in ("posts", "media", "media_variants", "jobs", "upload_usage"):
            counts[table] = (await s.execute(text(f"select count(*) from {table}"))).scalar_one()
    return counts


async def assert_nothing_written(glimpse: Glimpse) -> None:
    """A refused upload leaves no rows, no stored files and nothing in the staging directory."""
    assert await row_counts(glimpse) == {
        "posts": 0,
        "media": 0,
        "media_variants": 0,
        "jobs": 0,
        "upload_usage": 0,
    }
    assert glimpse.stored_files() == []
    assert list(glimpse.container.storage.staging_dir().iterdir()) == []


async def refused(
    glimpse: Glimpse, response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    error = assert_error(response, status, code)
    await assert_nothing_written(glimpse)
    return error


async def process(glimpse: Glimpse, headers: dict[str, str], response: httpx.Response) -> Any:
    """Run the queued jobs and return the post as its author then sees it."""
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "processing"
    await glimpse.run_jobs()
    post = await glimpse.client.get(f"/api/v1/posts/{response.json()['id']}", headers=headers)
    assert post.status_code == 200, post.text
    return post.json()


def multipart(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    """A multipart/form-data body of (name, filename, content) parts."""
    out = io.BytesIO()
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out.write(f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode())
        if filename is not None:
            out.write(b"Content-Type: application/octet-stream\r\n")
        out.write(b"\r\n" + content + b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


def png_bytes(size: tuple[int, int] = (320, 240), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (30, 160, 90) if mode == "RGB" else 0).save(out, "PNG")
    return out.getvalue()


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header claims width x height."""
    jpeg = bytearray(jpeg_bytes((64, 64)))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(jpeg)


def png_declaring(width: int, height: int) -> bytes:
    """A complete, valid 1-bit greyscale PNG of width x height, built row by row so that
    neither the test nor the file needs much memory (all-black rows compress ~1000:1)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


MP4_HEAD = (
    (struct.pack(">I", 24) + b"ftypisom" + b"\x00\x00\x02\x00" + b"isomiso2")
    + struct.pack(">I", 64)
    + b"moov"
    + b"\x00" * 200
)


# --- refused by type --------------------------------------------------------------------------


async def test_files_that_are_not_images_are_415_and_leave_nothing(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("photo.jpg", jpeg_bytes((64, 64)))
    candidates = [
        ("notes.txt", b"just some text, definitely not a photo\n" * 10),
        ("short.txt", b"hi"),
        ("empty.jpg", b""),
        ("photos.zip", zipped.getvalue()),
        ("random.bin", bytes(range(256)) * 8),
        ("picture.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'),
        # An AVIF: the HEIF family's container, but no decoder in the pipeline.
        (
            "x.avif",
            struct.pack(">I", 28) + b"ftypavif" + b"\x00" * 4 + b"avifmif1miaf" + b"\0" * 64,
        ),
        # JPEG magic bytes and then garbage: passes sniffing, but no header parses.
        ("x.jpg", b"\xff\xd8\xff" + b"\x00" * 500),
    ]
    for name, data in candidates:
        response = await glimpse.upload(headers, files=[(name, data)])
        await refused(glimpse, response, 415)


async def test_text_named_jpg_is_415_alone_or_after_a_valid_photo(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    text_file = b"this is not a jpeg at all, whatever its name says\n" * 4
    response = await glimpse.upload(headers, files=[("photo.jpg", text_file)])
    await refused(glimpse, response, 415)
    response = await glimpse.upload(
        headers, files=[("good.jpg", jpeg_bytes((64, 64))), ("bad.jpg", text_file)]
    )
    await refused(glimpse, response, 415)


async def test_an_mp4_header_with_nothing_playable_after_it_is_415(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.mp4", MP4_HEAD)])
    await refused(glimpse, response, 415, "unreadable_video")


async def test_png_named_jpg_is_accepted_and_processed(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    post = await process(
        glimpse, headers, await glimpse.upload(headers, files=[("photo.jpg", png_bytes())])
    )
    assert post["status"] == "ready"
    assert (post["media"][0]["width"], post["media"][0]["height"]) == (320, 240)


async def test_body_that_is_not_multipart_is_415(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    response = await glimpse.client.post(
        "/api/v1/posts", headers=headers, json={"file": "aGVsbG8=", "caption": "hi"}
    )
    await refused(glimpse, response, 415)
    response = await glimpse.client.post(
        "/api/v1/posts",
        headers={**headers, "Content-Type": "image/jpeg"},
        content=jpeg_bytes((32, 32)),
    )
    await refused(glimpse, response, 415)
    response = await glimpse.client.post("/api/v1/posts", headers=headers)
    await refused(glimpse, response, 415)


async def test_garbage_multipart_or_missing_boundary_is_400(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    photo = jpeg_bytes((64, 64))
    good = multipart([("file", "a.jpg", photo)])
    cases = [
        ("multipart/form-data", good),  # no boundary
        ("multipart/form-data; boundary=", good),
        (f"multipart/form-data; boundary={BOUNDARY}", b"complete garbage, no boundary in sight"),
        (f"multipart/form-data; boundary={BOUNDARY}", good[: len(good) // 2]),  # cut short
        (f"multipart/form-data; boundary={BOUNDARY}", b""),
        (f"multipart/form-data; boundary={BOUNDARY}", f"--{BOUNDARY}\r\n\x00\x01\r\n".encode()),
        # A text field that is not UTF-8.
        (
            f"multipart/form-data; boundary={BOUNDARY}",
            multipart([("caption", None, b"\xff\xfe caption"), ("file", "a.jpg", photo)]),
        ),
    ]
    for content_type, body in cases:
        response = await glimpse.client.post(
            "/api/v1/posts", headers={**headers, "Content-Type": content_type}, content=body
        )
        await refused(glimpse, response, 400)


async def test_a_boundary_longer_than_the_parser_takes_is_400(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    boundary = "b" * 300
    body = f"--{boundary}\r\n".encode()
    response = await glimpse.client.post(
        "/api/v1/posts",
        headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=body,
    )
    await refused(glimpse, response, 400, "malformed_multipart")


@pytest.mark.parametrize(
    "disposition",
    [
        None,
        'form-data; filename="a.jpg"',
        'form-data; name=""; filename="a.jpg"',
    ],
)
async def test_a_part_without_a_name_is_400(glimpse: Glimpse, disposition: str | None) -> None:
    headers = await glimpse.signup()
    header = f"Content-Disposition: {disposition}\r\n" if disposition else ""
    body = (
        f"--{BOUNDARY}\r\n{header}Content-Type: image/jpeg\r\n\r\n".encode()
        + jpeg_bytes((64, 64))
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    response = await glimpse.client.post(
        "/api/v1/posts",
        headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        content=body,
    )
    await refused(glimpse, response, 400, "malformed_multipart")


@pytest.mark.parametrize("settings", [{"upload_idle_timeout_seconds": 1.0}], indirect=True)
async def test_an_upload_that_stalls_is_400_and_leaves_nothing(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    body = multipart([("file", "a.jpg", jpeg_bytes((640, 480)))])

    async def stalling() -> AsyncIterator[bytes]:
        yield body[: len(body) // 2]
        await asyncio.sleep(5)  # the client's network went quiet
        yield body[len(body) // 2 :]

    response = await glimpse.client.post(
        "/api/v1/posts",
        headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        content=stalling(),
        timeout=3,
    )
    await refused(glimpse, response, 400, "upload_stalled")


async def test_the_sweep_leaves_a_long_uploads_finished_files_alone(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An hour into a slow upload its first file, finished long ago, must not look abandoned.
    monkeypatch.setattr(upload, "KEEP_FRESH_SECONDS", 0.0)
    headers = await glimpse.signup()
    body = multipart([("file", "a.jpg", jpeg_bytes((320, 240))), ("file", "b.jpg", jpeg_bytes())])
    second = body.index(b'name="file"; filename="b.jpg"')
    storage = glimpse.container.storage

    async def slow() -> AsyncIterator[bytes]:
        yield body[: second + 200]
        an_hour_and_more_ago = time.time() - 2 * 3600
        for spooled in storage.staging_dir().iterdir():
            os.utime(spooled, (an_hour_and_more_ago, an_hour_and_more_ago))
        yield body[second + 200 : second + 300]  # the upload goes on...
        assert await storage.sweep_staging() == 0  # ...and the hourly sweep runs meanwhile
        yield body[second + 300 :]

    response = await glimpse.client.post(
        "/api/v1/posts",
        headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        content=slow(),
    )
    post = await process(glimpse, headers, response)
    assert post["status"] == "ready" and len(post["media"]) == 2


async def test_a_client_that_goes_away_mid_upload_leaves_nothing_and_no_server_error(
    glimpse: Glimpse, caplog: pytest.LogCaptureFixture
) -> None:
    headers = await glimpse.signup()
    body = multipart([("file", "a.jpg", jpeg_bytes((640, 480)))])
    app = glimpse.client._transport.app  # type: ignore[attr-defined]
    sent: list[dict[str, Any]] = []
    messages = [
        {"type": "http.request", "body": body[: len(body) // 2], "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "server": ("glimpse.test", 80),
        "client": ("127.0.0.1", 5000),
        "root_path": "",
        "path": "/api/v1/posts",
        "raw_path": b"/api/v1/posts",
        "query_string": b"",
        "headers": [
            (b"host", b"glimpse.test"),
            (b"authorization", headers["Authorization"].encode()),
            (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    with caplog.at_level("INFO"):
        await app(scope, receive, send)

    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    await assert_nothing_written(glimpse)


# --- refused by size --------------------------------------------------------------------------

LIMIT = 200_000
CHUNK = 64 * 1024


async def stream_upload(
    glimpse: Glimpse, headers: dict[str, str], photo_head: bytes, padding: int
) -> tuple[httpx.Response, dict[str, int]]:
    """Upload one file of `photo_head` plus `padding` zero bytes in 64 KB chunks, noting how
    many chunks the server had pulled when it answered, and the largest file it staged."""
    staging = glimpse.container.storage.staging_dir()
    consumed = {"chunks": 0, "at_answer": -1, "largest_staged": 0}
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="huge.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + photo_head

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(padding // CHUNK):
            staged = [p.stat().st_size for p in staging.iterdir()]
            consumed["largest_staged"] = max([consumed["largest_staged"], *staged])
            consumed["chunks"] += 1
            yield b"\x00" * CHUNK
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    app = glimpse.client._transport.app  # type: ignore[attr-defined]

    async def watching(scope: Any, receive: Any, send: Any) -> None:
        async def send_and_note(message: Any) -> None:
            if message["type"] == "http.response.start":
                consumed["at_answer"] = consumed["chunks"]
            await send(message)

        await app(scope, receive, send_and_note)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=watching), base_url="http://glimpse.test"
    ) as client:
        response = await client.post(
            "/api/v1/posts",
            headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            content=body(),
        )
    return response, consumed


@pytest.mark.parametrize("settings", [{"max_image_bytes": LIMIT}], indirect=True)
async def test_oversized_file_is_413_before_the_rest_of_the_body_is_read(
    glimpse: Glimpse,
) -> None:
    headers = await glimpse.signup()
    response, consumed = await stream_upload(glimpse, headers, jpeg_bytes((64, 64)), 5 << 20)
    await refused(glimpse, response, 413, "file_too_large")
    # The rest of the body is never read, so the connection cannot serve another request.
    assert response.headers["connection"] == "close"
    # Answered once the limit was passed: at most one chunk beyond it.
    assert consumed["at_answer"] * CHUNK <= LIMIT + CHUNK, consumed
    assert consumed["largest_staged"] <= LIMIT, consumed


async def test_large_pixel_bomb_is_413_from_its_header_before_the_rest_is_read(
    glimpse: Glimpse,
) -> None:
    headers = await glimpse.signup()
    jpeg = jpeg_declaring(20_000, 20_000)
    response, consumed = await stream_upload(glimpse, headers, jpeg, 8 << 20)
    await refused(glimpse, response, 413, "too_many_pixels")
    # Judged as soon as the header had surely arrived, not after the whole 8 MB file.
    assert consumed["at_answer"] * CHUNK <= HEADER_PROBE_BYTES + CHUNK, consumed


async def test_a_pixel_bomb_whose_header_comes_late_is_still_413_before_the_rest_is_read(
    glimpse: Glimpse,
) -> None:
    # 650 KB of APP2 segments before the frame header: not there at the first look.
    headers = await glimpse.signup()
    jpeg = jpeg_declaring(20_000, 20_000)
    segment = b"\xff\xe2" + struct.pack(">H", 65_000) + b"\x00" * 64_998
    bomb = jpeg[:2] + segment * 10 + jpeg[2:]
    response, consumed = await stream_upload(glimpse, headers, bomb, 16 << 20)
    await refused(glimpse, response, 413, "too_many_pixels")
    assert consumed["at_answer"] * CHUNK <= HEADER_PROBE_BYTES * HEADER_PROBE_GROWTH, consumed


@pytest.mark.parametrize("settings", [{"max_image_bytes": LIMIT}], indirect=True)
async def test_file_exactly_at_the_size_limit_is_accepted(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    photo = jpeg_bytes((64, 64))
    # Trailing bytes after the JPEG's end marker are ignored by decoders.
    exact = photo + b"\x00" * (LIMIT - len(photo))
    response = await glimpse.upload(headers, files=[("a.jpg", exact)])
    assert response.status_code == 202, response.text
    over = await glimpse.upload(headers, files=[("b.jpg", exact + b"\x00")])
    assert_error(over, 413, "file_too_large")


async def test_pixel_bomb_is_413_too_many_pixels_judged_from_the_header(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    bomb = png_declaring(20_000, 20_000)  # 400 megapixels in a few tens of KB
    assert len(bomb) < 200_000
    response = await glimpse.upload(headers, files=[("bomb.png", bomb)])
    await refused(glimpse, response, 413, "too_many_pixels")
    # A small JPEG whose frame header claims 20000x20000.
    jpeg = jpeg_declaring(20_000, 20_000)
    response = await glimpse.upload(headers, files=[("bomb.jpg", jpeg)])
    await refused(glimpse, response, 413, "too_many_pixels")


@pytest.mark.parametrize("settings", [{"max_image_pixels": 100_000}], indirect=True)
async def test_photo_over_the_pixel_setting_is_413(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    response = await glimpse.upload(
        headers, files=[("small.jpg", jpeg_bytes((300, 300))), ("big.jpg", jpeg_bytes((400, 300)))]
    )
    await refused(glimpse, response, 413, "too_many_pixels")


async def test_21_files_are_413_too_many_files_and_20_are_accepted(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    tiny = jpeg_bytes((16, 16))
    response = await glimpse.upload(headers, files=[(f"{i}.jpg", tiny) for i in range(21)])
    await refused(glimpse, response, 413, "too_many_files")
    response = await glimpse.upload(headers, files=[(f"{i}.jpg", tiny) for i in range(20)])
    assert response.status_code == 202, response.text
    assert len(response.json()["media"]) == 20


async def test_too_many_text_parts_are_refused(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    parts = [("alt_text", None, b"x")] * 100 + [("file", "a.jpg", jpeg_bytes((16, 16)))]
    response = await glimpse.client.post(
        "/api/v1/posts",
        headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        content=multipart(parts),
    )
    await refused(glimpse, response, 413)


# --- refused by field -------------------------------------------------------------------------


async def test_invalid_fields_are_422(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    photo = jpeg_bytes((64, 64))
    no_files = multipart([("caption", None, b"no photo"), ("alt_text", None, b"nothing")])
    response = await glimpse.client.post(
        "/api/v1/posts",
        headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        content=no_files,
    )
    await refused(glimpse, response, 422, "no_files")
    cases: list[tuple[list[tuple[str, bytes]], dict[str, Any], str]] = [
        ([("a.jpg", photo)], {"filter": "sepia-deluxe"}, "unknown_filter"),
        ([("a.jpg", photo)], {"filter": "NORMAL"}, "unknown_filter"),
        ([("a.jpg", photo)], {"caption": "x" * 2201}, "caption_too_long"),
        ([("a.jpg", photo)], {"caption": "\U0001f600" * 2201}, "caption_too_long"),
        ([("a.jpg", photo)], {"alt_text": ["one", "two"]}, "too_many_alt_texts"),
        ([("a.jpg", photo)], {"caption": "a\x00b"}, "invalid_text"),
        ([("a.jpg", photo)], {"caption": "ring \x07"}, "invalid_text"),
        ([("a.jpg", photo)], {"alt_text": ["esc\x1b[31m"]}, "invalid_text"),
        ([("a.jpg", photo)], {"caption": "next line\u0085"}, "invalid_text"),
    ]
    for files, fields, code in cases:
        response = await glimpse.upload(headers, files=files, **fields)
        await refused(glimpse, response, 422, code)


async def test_caption_of_2200_characters_is_accepted(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    caption = "\U0001f4f7" * 2196 + "\r\n\t."  # lines and tabs are fine
    response = await glimpse.upload(headers, caption=caption)
    assert response.status_code == 202, response.text
    assert response.json()["caption"] == caption


async def test_upload_without_a_token_is_401(glimpse: Glimpse) -> None:
    await glimpse.signup()
    response = await glimpse.upload({})
    await refused(glimpse, response, 401)
    response = await glimpse.upload({"Authorization": "Bearer nope"})
    await refused(glimpse, response, 401)


async def test_a_failed_write_after_the_originals_were_stored_removes_them(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The originals are stored before the transaction that records the post; if that
    # transaction fails, nothing records them and the request must take them away again.
    from glimpse.posts import service

    real_create_post = service.create_post

    async def create_then_fail(*args: Any, **kwargs: Any) -> Any:
        await real_create_post(*args, **kwargs)
        assert len(glimpse.stored_files()) == 2  # stored by now, as the test means
        raise OperationalError("COMMIT", {}, Exception("disk I/O"), connection_invalidated=True)

    headers = await glimpse.signup()
    monkeypatch.setattr(service, "create_post", create_then_fail)
    files = [("a.jpg", jpeg_bytes()), ("b.jpg", jpeg_bytes(color=(1, 2, 3)))]
    response = await glimpse.upload(headers, files=files)
    assert_error(response, 503)
    await assert_nothing_written(glimpse)
    monkeypatch.setattr(service, "create_post", real_create_post)
    assert (await glimpse.upload(headers, files=files)).status_code == 202


# --- accepted, then processed -----------------------------------------------------------------


async def test_truncated_jpeg_fails_with_a_reason_only_its_author_sees(glimpse: Glimpse) -> None:
    author = await glimpse.signup("alice")
    other = await glimpse.signup("bob")
    data = testdata("invalid/corrupted.jpg").read_bytes()
    response = await glimpse.upload(author, files=[("corrupted.jpg", data)])
    post = await process(glimpse, author, response)
    assert post["status"] == "failed"
    # A reason in the photo itself, not "kept failing": and so tried once, never retried.
    assert post["error"]["code"] == "undecodable_image", post
    assert isinstance(post["error"]["message"], str) and post["error"]["message"]
    async with glimpse.container.db.read() as session:
        attempts = (
            (
                await session.execute(
                    text(
                        "SELECT attempts FROM jobs WHERE name = 'process_media' AND state = 'dead'"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert attempts == [1]
    assert_error(await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=other), 404)
    # Nothing was published: not in the grid, not counted.
    grid = await glimpse.client.get("/api/v1/users/alice/posts", headers=author)
    assert grid.json()["items"] == []
    me = await glimpse.client.get("/api/v1/me", headers=author)
    assert me.json()["post_count"] == 0
    # And nothing is left to retry: the post stays failed.
    assert await glimpse.run_jobs() == 0


async def test_photo_with_malformed_exif_becomes_ready(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    data = testdata("invalid/invalid_exif_image01088.jpg").read_bytes()
    post = await process(glimpse, headers, await glimpse.upload(headers, files=[("e.jpg", data)]))
    assert post["status"] == "ready", post
    assert len(post["media"][0]["variants"]) == 8


async def test_heic_from_a_phone_becomes_ready_as_jpeg_and_webp(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    name = "IMG_5195.HEIC"
    data = testdata(f"heic/{name}").read_bytes()
    response = await glimpse.upload(headers, files=[(name, data)])
    post = await process(glimpse, headers, response)
    assert post["status"] == "ready", post
    types = {v["content_type"] for v in post["media"][0]["variants"]}
    assert types == {"image/jpeg", "image/webp"}
    w320 = next(v for v in post["media"][0]["variants"] if v["name"] == "w320")
    served = await glimpse.client.get(w320["url"])
    with Image.open(io.BytesIO(served.content)) as im:
        assert im.format in ("JPEG", "WEBP")


async def test_animated_gif_becomes_ready_from_its_first_frame(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    frames = [
        Image.new("RGB", (400, 300), c) for c in [(220, 20, 20), (20, 20, 220), (20, 220, 20)]
    ]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    response = await glimpse.upload(headers, files=[("anim.gif", out.getvalue())])
    post = await process(glimpse, headers, response)
    assert post["status"] == "ready", post
    media = post["media"][0]
    assert (media["width"], media["height"]) == (400, 300)
    jpeg = next(
        v for v in media["variants"] if v["name"] == "w320" and v["content_type"] == "image/jpeg"
    )
    served = await glimpse.client.get(jpeg["url"])
    with Image.open(io.BytesIO(served.content)) as im:
        red, green, blue = im.convert("RGB").getpixel((im.width // 2, im.height // 2))
    assert red > 150 and green < 80 and blue < 80, (red, green, blue)


async def test_rgba_png_becomes_ready_with_transparency_flattened_onto_white(
    glimpse: Glimpse,
) -> None:
    headers = await glimpse.signup()
    data = testdata("large/goldfish.png").read_bytes()
    response = await glimpse.upload(headers, files=[("goldfish.png", data)])
    post = await process(glimpse, headers, response)
    assert post["status"] == "ready", post
    for variant in post["media"][0]["variants"]:
        served = await glimpse.client.get(variant["url"])
        assert served.status_code == 200
        with Image.open(io.BytesIO(served.content)) as im:
            assert im.mode == "RGB", (variant["name"], variant["content_type"], im.mode)
    # Fully transparent pixels come out white, not black.
    out = io.BytesIO()
    Image.new("RGBA", (200, 200), (0, 0, 0, 0)).save(out, "PNG")
    post = await process(
        glimpse, headers, await glimpse.upload(headers, files=[("clear.png", out.getvalue())])
    )
    assert post["status"] == "ready"
    jpeg = next(v for v in post["media"][0]["variants"] if v["content_type"] == "image/jpeg")
    with Image.open(io.BytesIO((await glimpse.client.get(jpeg["url"])).content)) as im:
        assert min(im.convert("L").getextrema()) > 240
