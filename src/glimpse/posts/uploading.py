"""The upload use case: a received upload becomes a post.

One function for every way in (the API's POST /posts, the web app's form to come, an import):
the caller parses its transport into an UploadForm (posts/upload.py spools the files) and calls
`create_post_from_upload`; a story (stories/uploading.py) calls `store_upload` beneath it, with
its own rows and answer. It owns its transactions, as a route would: a read for the quota, then
one write for the post, its media and their jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.backends.storage import Storage, disk_fault
from glimpse.container import Container
from glimpse.errors import Invalid, TooLarge, Unavailable, UnsupportedMediaType
from glimpse.media import decoding, images, video
from glimpse.media.sniff import is_video
from glimpse.media.video_planning import check_limits, unsupported_codec
from glimpse.ops.metrics import UPLOAD_BYTES, UPLOAD_FILES, UPLOADS, never_failing
from glimpse.posts import service
from glimpse.posts.models import MediaKind, Post, PostKind
from glimpse.posts.schemas import PostOut
from glimpse.posts.upload import StagedFile, UploadForm, discarding, too_many_pixels
from glimpse.posts.video_checks import CheckAllowance
from glimpse.posts.views import PostRow, post_views

T = TypeVar("T")
log = logging.getLogger("glimpse.posts")


async def create_post_from_upload(
    container: Container, author_id: int, form: UploadForm
) -> PostOut:
    """Check the fields, the images' headers, the videos' containers and the quota, store the
    originals, and insert the post (status `processing`) with one processing job per photo or
    video, in one transaction.

    Takes the form's spooled files over: they are gone when this returns or raises. If the
    transaction fails, the stored originals are removed again, so a failed upload leaves
    nothing behind. Raises domain errors (Invalid, TooLarge, UnsupportedMediaType, Throttled
    for a quota).
    """

    async def answer(session: AsyncSession, post: Post) -> PostOut:
        [view] = await post_views(session, [PostRow.of(post)], author_id, container.media_urls)
        return view

    return await store_upload(container, author_id, form, PostKind.POST, answer)


async def store_upload(
    container: Container,
    author_id: int,
    form: UploadForm,
    kind: str,
    finish: Callable[[AsyncSession, Post], Awaitable[T]],
) -> T:
    """The use case behind every upload: a post, or a story (`kind`), whose extra rows and
    answer `finish` adds and builds inside the same transaction, before it commits (once the
    post exists, nothing may fail the request: a client told to retry would upload it twice)."""
    settings = container.settings
    with discarding(form):
        caption, filter_name = service.check_post_fields(
            form.first("caption"),
            form.first("filter"),
            form.fields.get("alt_text", []),
            len(form.files),
            settings,
        )
        images_, videos = _split_by_kind(form.files)
        await _check_headers(images_, settings.max_image_pixels)
        durations = await _check_videos(
            container, videos, service.max_video_seconds(settings, kind), kind == PostKind.STORY
        )
        async with container.db.read() as session:
            await service.check_quota(session, settings, author_id, sum(f.size for f in form.files))
        post_id = container.ids.next_id()
        media = await _store_originals(container, post_id, form, durations)
    try:
        async with container.db.write() as session:
            post = await service.create_post(
                session,
                container.ids,
                settings,
                post_id=post_id,
                author_id=author_id,
                caption=caption,
                filter_name=filter_name,
                media=media,
                kind=kind,
                now=container.now(),
            )
            answer = await finish(session, post)
    except Exception:
        # The transaction failed, so nothing records these originals. (A cancellation, say at
        # shutdown, may have come after the commit: those are left to the sweep of abandoned
        # uploads, which removes them only if nothing records them.)
        await _remove_originals(container.storage, media)
        raise
    with never_failing():
        UPLOADS.labels(kind).inc()
        for f in form.files:
            UPLOAD_FILES.labels("video" if is_video(f.media_type) else "photo").inc()
        UPLOAD_BYTES.inc(sum(f.size for f in form.files))
    return answer


def _split_by_kind(files: list[StagedFile]) -> tuple[list[StagedFile], list[StagedFile]]:
    videos = [f for f in files if is_video(f.media_type)]
    return [f for f in files if not is_video(f.media_type)], videos


async def _check_videos(
    container: Container, files: list[StagedFile], max_seconds: float, story: bool
) -> dict[Path, float]:
    """Judge each video from its container and first frame, in a decoding child (FFmpeg's
    demuxers read the hostile bytes there, under a budget), before it is stored and queued:
    a file that is no video, a codec we cannot play, or a video past a limit of API.md is
    refused now, not a minute into its transcode. Returns each one's declared duration."""
    durations: dict[Path, float] = {}
    budget = decoding.DecodeBudget.for_video_probe(container.settings)
    allowance = CheckAllowance()
    for f in files:
        name = f.filename or "A video"
        try:
            probe = await container.video_checks.probe(f.path, f.media_type, budget, allowance)
        except video.UnreadableVideo as exc:
            raise UnsupportedMediaType(
                f"{name} is not a readable video: {exc}", code="unreadable_video"
            ) from None
        except decoding.DecodeBudgetExceeded:
            raise Invalid(
                f"{name} takes far more work to open than any real video.",
                code="video_too_complex",
            ) from None
        except decoding.OriginalUnreadable as exc:
            raise disk_fault(exc.as_os_error(), "read spooled uploads") from None
        except decoding.DecoderDied:
            raise Unavailable(
                "The server could not check this video just now; please try again.",
                retry_after=VIDEO_CHECK_RETRY_AFTER_SECONDS,
            ) from None
        except (Unavailable, TooLarge, Invalid, UnsupportedMediaType):
            raise
        except Exception:
            # What no verdict above names is the checking machinery's fault, not the file's:
            # the server's trouble, a 503, never a 500 (and the log says what it was).
            log.exception("checking the video %s failed", name)
            raise Unavailable(
                "The server could not check this video just now; please try again.",
                retry_after=VIDEO_CHECK_RETRY_AFTER_SECONDS,
            ) from None
        codec = unsupported_codec(probe)
        if codec is not None:
            raise UnsupportedMediaType(
                f"{name} cannot be played here: Glimpse does not handle {codec}.",
                code="unsupported_video_codec",
            )
        breach = check_limits(probe, max_seconds, story)
        if breach is not None and not breach.too_large:
            raise Invalid(breach.message, code=breach.code)
        if breach is not None:
            raise TooLarge(breach.message, code=breach.code)
        durations[f.path] = probe.duration_s
    return durations


# When to try again after the checking process died (a passing fault of this machine).
VIDEO_CHECK_RETRY_AFTER_SECONDS = 5


async def _check_headers(files: list[StagedFile], max_pixels: int) -> None:
    """Judge each image from its header and structure alone, before anything is decoded. (Its first bytes
    were sniffed as it arrived; a file whose header then does not parse only looks like an
    image.)"""
    for f in files:
        try:
            header = await asyncio.to_thread(images.read_image_header, f.path)
        except images.UndecodableImage:
            raise UnsupportedMediaType(
                f"{f.filename or 'A file'} is not a readable image.", code="unreadable_image"
            ) from None
        if header.width * header.height > max_pixels:
            raise too_many_pixels(max_pixels)
        # A scan bomb or a chunk flood is refused here, before it is stored and queued (the
        # worker checks again, and decodes under a budget in any case): a few ms a file.
        problem = await asyncio.to_thread(images.check_file_structure, f.path)
        if problem is not None and problem.too_complex:
            raise Invalid(
                f"{f.filename or 'A file'} is built in a way no camera writes: {problem.reason}",
                code="image_too_complex",
            )
        if problem is not None:
            raise UnsupportedMediaType(
                f"{f.filename or 'A file'} is damaged: {problem.reason}", code="unreadable_image"
            )


async def _store_originals(
    container: Container, post_id: int, form: UploadForm, durations: dict[Path, float]
) -> list[service.NewMedia]:
    storage = container.storage
    alt_texts = form.fields.get("alt_text", [])
    stored: list[service.NewMedia] = []
    try:
        for index, f in enumerate(form.files):
            media_id = container.ids.next_id()
            key = service.original_key(post_id, media_id)
            duration = durations.get(f.path)  # (before put_file moves the file away)
            await storage.put_file(key, f.path, f.media_type.value)
            stored.append(
                service.NewMedia(
                    media_id=media_id,
                    original_key=key,
                    media_type=f.media_type.value,
                    size=f.size,
                    alt_text=alt_texts[index] if index < len(alt_texts) else "",
                    kind=MediaKind.VIDEO if is_video(f.media_type) else MediaKind.IMAGE,
                    duration_s=duration or None,
                )
            )
    except BaseException:
        await _remove_originals(storage, stored)
        raise
    return stored


async def _remove_originals(storage: Storage, media: list[service.NewMedia]) -> None:
    for m in media:
        await storage.delete(m.original_key)
