"""The media origin: what a CDN pulls. Only content-addressed variant keys are served; originals
and anything else answer 404, and no key can reach outside the store."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.responses import StreamingResponse

from glimpse.api.deps import ContainerDep
from glimpse.api.errors import error_responses
from glimpse.backends.storage import ObjectMissing, Storage
from glimpse.container import Container
from glimpse.errors import NotFound, RangeNotSatisfiable
from glimpse.media.origin_cache import OriginEntry
from glimpse.posts import service as posts

router = APIRouter(tags=["media"])

# v/<first two hex digits>/<sha-256>.<ext>, the only shape variant_key() makes.
_VARIANT_KEY = re.compile(r"^v/([0-9a-f]{2})/(\1[0-9a-f]{62})\.(jpg|webp|avif|mp4)$")
_CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "avif": "image/avif",
    "mp4": "video/mp4",
}
_CACHE_FOREVER = "public, max-age=31536000, immutable"
# Media of private accounts (and of unfinished posts) must not sit in shared caches: going
# private has to take effect. Its keys are unguessable, but no CDN may keep a copy.
_CACHE_PRIVATE = "private, no-cache"
# Variants are answered from one read: several times faster than streaming them. Larger files
# (videos) are streamed, and so are large ranges of them.
_SMALL_FILE = 2 * 1024 * 1024
# 18 digits cover any file size; a longer number is not a range we could serve anyway.
# Positions past any file's size are valid and cut to it (RFC 9110 14.1.2): up to 40 digits, as
# many as a header may bring without int() costing anything.
_RANGE = re.compile(r"^bytes=(\d{0,40})-(\d{0,40})$")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One `bytes=` range as (first, last), both inclusive; None to send the whole file (a range
    we do not understand, or several, may be ignored: RFC 9110, 14.2)."""
    match = _RANGE.match(header.strip())
    if not match or not any(match.groups()):
        return None
    first_text, last_text = match.groups()
    if not first_text:  # the last N bytes
        length = int(last_text)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable("The range is empty.")
        return max(0, size - length), size - 1
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    if last_text and int(last_text) < first:
        return None  # not a valid range at all: RFC 9110 says to ignore it
    if first >= size:
        raise RangeNotSatisfiable("The range is outside the file.")
    return first, last


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return "*" in candidates or etag in candidates


def _gone() -> NotFound:
    # Not cached anywhere: the same key may be served tomorrow (a repost of the same photo).
    return NotFound("No such media.", code="media_not_found", headers={"Cache-Control": "no-store"})


async def _read(
    storage: Storage, key: str, path: Path | None, offset: int, length: int, cached: bytes | None
) -> bytes:
    if cached is not None:
        return cached[offset : offset + length]
    try:
        if path is not None:
            # A page-cache read of a few hundred KB is quicker inline than a hop to a thread.
            with path.open("rb") as f:
                f.seek(offset)
                return f.read(length)
        # Another store: only the bytes asked for (a range of a video is not the video).
        return b"".join([chunk async for chunk in await storage.open_range(key, offset, length)])
    except (FileNotFoundError, ObjectMissing):
        raise _gone() from None


# Read from a streamed file this much at a time: large enough that a thread hop per chunk is
# noise, small enough that a slow client holds little memory.
_STREAM_CHUNK = 256 * 1024


async def _file_section(path: Path, offset: int, length: int) -> AsyncIterator[bytes]:
    with await asyncio.to_thread(path.open, "rb") as f:
        await asyncio.to_thread(f.seek, offset)
        while length > 0:
            chunk = await asyncio.to_thread(f.read, min(_STREAM_CHUNK, length))
            if not chunk:  # (the file cannot shrink: keys are never rewritten)
                return
            length -= len(chunk)
            yield chunk


async def _section(
    storage: Storage, key: str, path: Path | None, offset: int, length: int
) -> AsyncIterator[bytes]:
    """The bytes to stream, opened now so that an object purged since we looked is a 404
    rather than a response cut short."""
    if path is not None:
        if not path.is_file():  # noqa: ASYNC240  (one stat of a file in the page cache)
            raise _gone()
        return _file_section(path, offset, length)
    try:
        return await storage.open_range(key, offset, length)
    except ObjectMissing:
        raise _gone() from None


async def get_media(
    key: str,
    request: Request,
    container: ContainerDep,
    exp: Annotated[str | None, Query(description="expiry of a private media URL")] = None,
    sig: Annotated[str | None, Query(description="signature of a private media URL")] = None,
    v: Annotated[str | None, Query(description="the viewer a private media URL is for")] = None,
) -> Response:
    """A stored variant, with immutable caching, ETag / If-None-Match and byte ranges. Media
    only some may see needs the signed URL its post shows them. (Requests are answered by
    media/fast_path.py before they reach FastAPI; this route is its description in the OpenAPI
    document, and what answers should the fast path hand a request on.)"""
    headers = request.headers
    return await answer_media(
        container,
        key,
        head=request.method == "HEAD",
        if_none_match=headers.get("if-none-match"),
        range_header=headers.get("range"),
        if_range=headers.get("if-range"),
        exp=exp,
        sig=sig,
        v=v,
    )


async def answer_media(
    container: Container,
    key: str,
    *,
    head: bool,
    if_none_match: str | None,
    range_header: str | None,
    if_range: str | None,
    exp: str | None,
    sig: str | None,
    v: str | None,
) -> Response:
    """The answer to GET (or HEAD) /media/{key}: who may see it, then the bytes, a range, a 304
    or a redirect. Raises NotFound and RangeNotSatisfiable."""
    match = _VARIANT_KEY.match(key)
    if not match:
        raise _gone()
    storage = container.storage
    entry = container.origin_cache.get(key)
    if (
        entry is not None
        and entry.visibility is None
        and not entry.stored
        and await storage.size(key) is not None
    ):
        # Remembered as nobody's and not stored, but stored now: a repost of the same photo
        # has just made it again. (A stat keeps unknown keys away from the database.)
        entry = None
    entry = entry or await _look_up(container, key)
    if entry.visibility is None:
        raise _gone()
    if entry.visibility == "private" and not await _viewer_may_see(container, key, exp, sig, v):
        raise _gone()  # (never confirm that private media exists)
    visibility, size, cached = entry.visibility, entry.size, entry.data
    etag = f'"{match.group(2)}"'
    content_type = _CONTENT_TYPES[match.group(3)]
    headers = {
        "ETag": etag,
        "Cache-Control": _CACHE_FOREVER if visibility == "public" else _CACHE_PRIVATE,
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
    }
    if visibility == "public":
        # How long the nginx edge may keep it before asking again (glimpse/edge/nginx.py).
        headers["X-Accel-Expires"] = str(container.settings.edge_cache_seconds)
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    # (after the 304: a client that holds the bytes needs no trip to the bucket)
    redirect = await _redirect(container, key, visibility)
    if redirect is not None:
        return redirect
    # Only needed when the bytes are not in memory (resolving it costs a few system calls).
    path = storage.local_path(key) if cached is None else None
    byte_range = None
    # If-Range with another validator means "the file changed: send all of it".
    if range_header and (if_range is None or if_range == etag):
        try:
            byte_range = parse_range(range_header, size)
        except RangeNotSatisfiable as exc:
            exc.headers = {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"}
            raise
    if byte_range is not None:
        first, last = byte_range
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        headers["Content-Length"] = str(last - first + 1)
        if not head and cached is None and last - first + 1 > _SMALL_FILE:
            # A browser's <video> asks for `bytes=0-` and then seeks: tens of MB each time,
            # streamed from the file (or the store) rather than read whole into memory.
            return StreamingResponse(
                await _section(storage, key, path, first, last - first + 1),
                status_code=206,
                media_type=content_type,
                headers=headers,
            )
        body = b"" if head else await _read(storage, key, path, first, last - first + 1, cached)
        return Response(body, status_code=206, media_type=content_type, headers=headers)
    if head:
        headers["Content-Length"] = str(size)
        return Response(status_code=200, media_type=content_type, headers=headers)
    if cached is None and size > _SMALL_FILE:
        # Streamed from the disk or the store, never through Starlette's FileResponse: it reads
        # the Range header again and answered one ignored above (invalid, another unit) with a
        # text/plain 400 of its own.
        return StreamingResponse(
            await _section(storage, key, path, 0, size),
            media_type=content_type,
            headers={**headers, "Content-Length": str(size)},
        )
    response = Response(
        await _read(storage, key, path, 0, size, cached), media_type=content_type, headers=headers
    )
    if visibility == "public" and cached is not None:
        # The same two answers for every plain GET of this key while the entry stands.
        entry.answers[_PREPARED] = PreparedAnswer(
            etag,
            tuple(response.raw_headers),
            tuple(Response(status_code=304, headers=headers).raw_headers),
            cached,
        )
    return response


_PREPARED = "get"


@dataclass(frozen=True)
class PreparedAnswer:
    """What `answer_media` answers a GET of a public file it holds in memory, without a query
    string or a Range header: 200 with the bytes, or 304 when If-None-Match holds the ETag."""

    etag: str
    ok_headers: tuple[tuple[bytes, bytes], ...]
    not_modified_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def prepared_answer(container: Container, key: str) -> PreparedAnswer | None:
    """The answers `answer_media` made for this key's current entry, if it is public, in memory,
    and its visibility was checked within the TTL; None means "ask answer_media". Its headers,
    the 304 check and the dict, Response and header list it builds cost a hot file's GET a
    sixth of its time in the process (BENCHMARKS.md, issue 19)."""
    entry = container.origin_cache.get(key)
    return None if entry is None else entry.answers.get(_PREPARED)


# A presigned URL's life: long enough to start a video and seek in it, short enough that a
# copied one is soon worthless (the origin's own signed URLs last an hour or two).
PRESIGNED_SECONDS = 300
# A redirect to a public object is cached briefly: going private takes effect after this.
_PUBLIC_REDIRECT_CACHE = "public, max-age=300"


async def _redirect(container: Container, key: str, visibility: str) -> Response | None:
    """A 302 to the store itself, when the operator chose that (GLIMPSE_STORAGE_REDIRECT) and
    the store has URLs: the bytes then never pass through this process."""
    mode = container.settings.storage_redirect
    if mode == "presigned":
        url = await container.storage.object_url(key, PRESIGNED_SECONDS)
        cache = "private, no-store"
    elif mode == "public" and visibility == "public":
        url = await container.storage.object_url(key, None)
        if url is not None and container.settings.storage_public_url:
            url = f"{container.settings.storage_public_url.rstrip('/')}/{key}"
        cache = _PUBLIC_REDIRECT_CACHE
    else:
        return None
    if url is None:  # the local disk: served here, as always
        return None
    return Response(status_code=302, headers={"Location": url, "Cache-Control": cache})


async def _viewer_may_see(
    container: Container, key: str, exp: str | None, sig: str | None, v: str | None
) -> bool:
    """A private key is served to the viewer its URL was signed for, while that viewer may
    still see a post that uses it (graph.visibility, asked again after the cache TTL)."""
    viewer_id = container.media_urls.signed_viewer(key, exp, sig, v)
    if viewer_id is None:
        return False
    allowed = container.origin_cache.verdict(key, viewer_id)
    if allowed is None:
        async with container.db.read() as session:
            allowed = await posts.key_visible_to(session, key, viewer_id, container.now())
        container.origin_cache.remember_verdict(key, viewer_id, allowed)
    return allowed


async def _look_up(container: Container, key: str) -> OriginEntry:
    """Ask the database who may see the key, and remember the answer (and small files)."""
    async with container.db.read() as session:
        visibility = await posts.media_visibility(session, key)
    size = await container.storage.size(key)
    if visibility is None:
        return container.origin_cache.put(key, None, 0, None, stored=size is not None)
    if size is None:
        # Recorded but not (or no longer, or not yet again) stored: a moment's state, so
        # answer 404 now without remembering it.
        raise _gone()
    data = None
    if size <= _SMALL_FILE:
        with contextlib.suppress(NotFound):
            data = await _read(
                container.storage, key, container.storage.local_path(key), 0, size, None
            )
    return container.origin_cache.put(key, visibility, size, data)


router.add_api_route(
    "/media/{key:path}",
    get_media,
    methods=["GET"],
    response_class=Response,
    responses={
        200: {"content": {t: {} for t in _CONTENT_TYPES.values()}, "description": "the file"},
        206: {"content": {t: {} for t in _CONTENT_TYPES.values()}, "description": "a range"},
        302: {"description": "the object in the store itself (GLIMPSE_STORAGE_REDIRECT)"},
        304: {"description": "not modified"},
        **error_responses(404, 416, 422),
    },
)
router.add_api_route("/media/{key:path}", get_media, methods=["HEAD"], include_in_schema=False)
