"""Queue handlers of the upload pipeline. Payloads are ids; each handler reloads its rows, treats
a missing row as done, and is safe to run twice."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.backends.storage import ObjectMissing, Storage, disk_fault
from glimpse.container import Container
from glimpse.errors import StorageUnavailable
from glimpse.ids import smallest_id_at
from glimpse.jobs import VIDEO_LANE, Payload, PermanentJobError, job
from glimpse.media import decoding, images, video
from glimpse.media.sniff import MediaType
from glimpse.posts import avif, repository, service
from glimpse.posts.models import PostKind, PostStatus

log = logging.getLogger("glimpse.jobs")
T = TypeVar("T")


async def _media_failed(container: Container, payload: Payload, error: PermanentJobError) -> None:
    async with container.db.write() as session:
        await service.fail_media(session, int(payload["media_id"]), error.code, error.message)


async def _media_reopened(session: AsyncSession, payload: Payload) -> None:
    await service.reopen_failed_media(session, int(payload["media_id"]))


@job(service.PROCESS_MEDIA_JOB, on_dead=_media_failed, on_revive=_media_reopened)
async def process_media(container: Container, payload: Payload) -> None:
    """Make every variant of one uploaded photo and, with the post's last photo, finish the post."""
    media_id = int(payload["media_id"])
    async with container.db.read() as session:
        media = await repository.get_media(session, media_id)
        post = await repository.get_post(session, media.post_id) if media else None
        recorded = await repository.recorded_renditions(session, media.id) if media else []
    if media is None or post is None or media.status == PostStatus.FAILED:
        return  # the post was deleted (or already failed) meanwhile
    if recorded and await _all_stored(container.storage, recorded):
        return  # delivered again after a run that recorded it (record_processed_media)
    missing = _original_missing()
    # On a local disk the decoding child reads the original itself (up to 50 MB that need not
    # pass through this process); other stores hand over its bytes.
    original: bytes | Path | None = container.storage.local_path(media.original_key)
    if original is None:
        try:
            original = await container.storage.get_bytes(media.original_key)
        except ObjectMissing:
            raise missing from None
    try:
        # Never decoded in this process: a hostile file costs a child process its budget.
        processed = await asyncio.to_thread(
            decoding.decode_in_child,
            original,
            post.filter_name,
            decoding.DecodeBudget.from_settings(container.settings),
            post.kind == PostKind.STORY,
        )
    except decoding.OriginalUnreadable as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
            raise missing from None
        raise disk_fault(exc.as_os_error(), "read files") from exc
    except (images.TooComplexImage, decoding.DecodeBudgetExceeded) as exc:
        raise PermanentJobError("image_too_complex", str(exc)) from exc
    except images.UndecodableImage as exc:
        raise PermanentJobError("undecodable_image", str(exc)) from exc
    del original
    await _store_processed(
        container,
        media_id,
        processed,
        guard_seconds=container.settings.job_lease_seconds,
        heal=bool(recorded),
    )


@job(avif.MAKE_AVIF_JOB)
async def make_avif_variants(container: Container, payload: Payload) -> None:
    """The AVIF copies of one ready photo's `w1080` and `w640`. The post is ready and served
    without them, so a failure here touches nothing the author sees: the job is retried, or
    buried, and the photo keeps its WebP and JPEG."""
    media_id = int(payload["media_id"])
    settings = container.settings
    async with container.db.read() as session:
        media = await repository.get_media(session, media_id)
        post = await repository.get_post(session, media.post_id) if media else None
        made = media is not None and await repository.has_avif_copies(session, media_id)
    if media is None or post is None or not avif.gets_avif(post, media) or made:
        return  # deleted or taken down meanwhile, a video, or made by an earlier delivery
    if not settings.avif_enabled:
        return  # switched off since it was queued
    if not images.avif_available():
        raise PermanentJobError(
            "avif_unavailable", "This server's Pillow cannot write AVIF (needs Pillow 11.2+)."
        )
    # As process_media reads it: the child decodes the original itself where it is on a disk.
    original: bytes | Path | None = container.storage.local_path(media.original_key)
    if original is None:
        try:
            original = await container.storage.get_bytes(media.original_key)
        except ObjectMissing:
            raise _original_missing() from None
    try:
        # The photo's own budget: the same original, decoded the same way once more.
        variants = await asyncio.to_thread(
            decoding.avif_in_child,
            original,
            post.filter_name,
            settings.avif_quality,
            settings.avif_speed,
            decoding.DecodeBudget.from_settings(settings),
        )
    except decoding.OriginalUnreadable as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
            raise _original_missing() from None
        raise disk_fault(exc.as_os_error(), "read files") from exc
    except (images.TooComplexImage, decoding.DecodeBudgetExceeded) as exc:
        raise PermanentJobError("image_too_complex", str(exc)) from exc
    except images.UndecodableImage as exc:
        raise PermanentJobError("undecodable_image", str(exc)) from exc
    except images.AvifUnavailable as exc:  # the decoding child's Pillow (another install?)
        raise PermanentJobError("avif_unavailable", str(exc)) from exc
    del original

    async def record(session: AsyncSession, keys: list[str]) -> bool:
        return await avif.record_avif_variants(
            session, container.ids, settings, media_id, variants, keys
        )

    await _store_and_record(container, variants, record, guard_seconds=settings.job_lease_seconds)
    # Committed: the summaries kept of the post (without these copies) go, in every process
    # that asks Redis; the first levels of the others keep theirs `unfinished_seconds` at most.
    await container.post_summaries.forget([post.id])


# How often the transcode's progress file is read, and the percentage written to the post.
PROGRESS_POLL_SECONDS = 2.0


@job(service.TRANSCODE_VIDEO_JOB, on_dead=_media_failed, on_revive=_media_reopened, lane=VIDEO_LANE)
async def transcode_video(container: Container, payload: Payload) -> None:
    """Make every rendition of one uploaded video and, with the post's last media item, finish
    the post. The same steps in the same order as `process_media`; the renditions are files."""
    media_id = int(payload["media_id"])
    async with container.db.read() as session:
        media = await repository.get_media(session, media_id)
        post = await repository.get_post(session, media.post_id) if media else None
        recorded = await repository.recorded_renditions(session, media.id) if media else []
    if media is None or post is None or media.status == PostStatus.FAILED:
        return  # the post was deleted (or already failed) meanwhile
    if recorded and await _all_stored(container.storage, recorded):
        return  # delivered again after a run that recorded it (record_processed_media)
    storage, settings = container.storage, container.settings
    staging = storage.staging_dir()
    # What an earlier run of this job left, killed with its worker: its renditions, progress
    # and fetched original (up to 200 MB). That run is over (this one holds the job's lease now),
    # and the staging sweep would take an hour to notice.
    for earlier in ("transcode", "progress", "original"):
        await asyncio.to_thread(_remove_staged, staging, f"{earlier}-{media_id}-")
    # The child reads the original from its file (up to 200 MB never pass through a bytes
    # object), from the store's disk, or from a copy fetched into staging from other stores.
    fetched: Path | None = None
    original = storage.local_path(media.original_key)
    progress = _staged_name(staging, f"progress-{media_id}-")
    # The renditions' names start with this: a child killed mid-transcode leaves them behind.
    renditions = _staged_name(staging, f"transcode-{media_id}-").name + "-"
    try:
        if original is None:
            original = fetched = _staged_name(staging, f"original-{media_id}-")
            try:
                await storage.fetch_to_file(media.original_key, fetched)
            except ObjectMissing:
                raise _original_missing() from None
        try:
            processed = await _reporting_progress(
                container,
                media_id,
                progress,
                asyncio.to_thread(
                    decoding.transcode_in_child,
                    original,
                    MediaType(media.original_type),
                    staging,
                    post.kind == PostKind.STORY,
                    service.max_video_seconds(settings, post.kind),
                    decoding.DecodeBudget.for_video(settings),
                    progress,
                    renditions,
                ),
            )
        except decoding.OriginalUnreadable as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
                raise _original_missing() from None
            raise disk_fault(exc.as_os_error(), "read or write video files") from exc
        except (decoding.DecodeBudgetExceeded, decoding.DecoderDied) as exc:
            await asyncio.to_thread(_remove_staged, staging, renditions)
            if isinstance(exc, decoding.DecoderDied):
                raise  # perhaps the machine's fault: tried again
            raise PermanentJobError("video_too_complex", str(exc)) from exc
        except video.VideoRefused as exc:
            raise PermanentJobError(exc.code, exc.message) from exc
        except video.UnreadableVideo as exc:
            raise PermanentJobError("undecodable_video", str(exc)) from exc
    finally:
        for leftover in (progress, fetched):
            if leftover is not None:
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
    try:
        await _store_processed(
            container,
            media_id,
            processed,
            guard_seconds=settings.video_job_lease_seconds,
            heal=bool(recorded),
        )
    finally:
        # What a put did not consume (all of it after a failure): staging is no place to keep
        # them, and the sweep would take an hour.
        for variant in processed.variants:
            if isinstance(variant, video.VideoFile):
                with contextlib.suppress(OSError):
                    variant.path.unlink(missing_ok=True)


def _remove_staged(staging: Path, prefix: str) -> None:
    for path in staging.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            path.unlink()


def _original_missing() -> PermanentJobError:
    return PermanentJobError(
        "original_missing", "The uploaded file is gone; please upload it again."
    )


def _staged_name(staging: Path, prefix: str) -> Path:
    # A name of its own for each run: a job run twice at once (a lease that lapsed) must not
    # write into the other run's files.
    return staging / f"{prefix}{uuid.uuid4().hex}"


async def _reporting_progress(
    container: Container, media_id: int, progress: Path, work: Awaitable[T]
) -> T:
    """Await `work`, copying the percentage the child writes to `progress` onto the media row
    every PROGRESS_POLL_SECONDS, for the post's author to see."""
    task = asyncio.ensure_future(work)
    reported = 0
    while True:
        done, _ = await asyncio.wait({task}, timeout=PROGRESS_POLL_SECONDS)
        if done:
            return task.result()
        try:
            percent = int(await asyncio.to_thread(progress.read_text) or 0)
        except (OSError, ValueError):
            continue  # not written yet, or caught mid-write: the next look will do
        if percent <= reported:
            continue
        reported = percent
        try:
            async with container.db.write() as session:
                await service.record_progress(session, media_id, percent)
        except Exception:
            # A courtesy to the author: a busy database must not fail the transcode.
            log.warning("recording the progress of media %s failed", media_id, exc_info=True)


async def _store_processed(
    container: Container,
    media_id: int,
    processed: images.ProcessedImage | video.ProcessedVideo,
    *,
    guard_seconds: float,
    heal: bool = False,
) -> None:
    """Store the variants, then record them (and finish the post if it was the last item);
    `heal`: record_processed_media's."""
    posts: list[int] = []

    async def record(session: AsyncSession, keys: list[str]) -> bool:
        current = await repository.get_media(session, media_id)
        if current is not None:
            posts.append(current.post_id)
        return current is not None and await service.record_processed_media(
            session,
            container.ids,
            container.settings,
            current,
            processed,
            keys,
            container.now(),
            heal=heal,
        )

    await _store_and_record(container, processed.variants, record, guard_seconds=guard_seconds)
    # A story published again for a highlight gets back the renditions the reaper took down,
    # and a run that heals may record other ones: summaries kept of it meanwhile go, as when
    # AVIF copies are added.
    await container.post_summaries.forget(posts)


Variant = images.EncodedVariant | video.VideoFile


async def _all_stored(storage: Storage, keys: Sequence[str]) -> bool:
    """Whether every one of these files is in the store. A run that recorded them may have
    been cut short before it stored again what a purge of another post with the same bytes
    took meanwhile (_store_and_record): a run again must then make them again, not skip."""
    for key in keys:
        if await storage.size(key) is None:
            return False
    return True


async def _store_and_record(
    container: Container,
    variants: Sequence[Variant],
    record: Callable[[AsyncSession, list[str]], Awaitable[bool]],
    *,
    guard_seconds: float,
) -> None:
    """Store the files, then `record` their keys in one write transaction (False: nothing uses
    them now, and they are purged). At least once and idempotent: see the comments below."""
    storage = container.storage
    keys = [await _key_of(v) for v in variants]
    # Should this run die between storing the files and recording them, or the post be deleted
    # meanwhile, nothing would point at the files: a purge scheduled first removes them then.
    # It waits `guard_seconds` (the job's lease), by when this run has recorded them (it then
    # keeps them) or is dead.
    async with container.db.write() as session:
        service.schedule_purge(
            session, container.ids, container.settings, keys, delay_seconds=guard_seconds
        )
    # Files first, rows second: a row never points at a file that is not there yet.
    for variant, key in zip(variants, keys, strict=True):
        await _put_variant(storage, key, variant)
    async with container.db.write() as session:
        recorded = await record(session, keys)
        if not recorded:  # deleted (or expired) while we worked: no need to wait for the guard
            service.schedule_purge(session, container.ids, container.settings, keys)
        being_deleted = (
            await repository.marked_deleting(session, keys, since=_live_marks_since(container))
            if recorded
            else set()
        )
    if recorded:
        # A purge (this run's own guard, or another post's with the same bytes) may have taken
        # them between our put and our commit; purges decide under the write lock, so never
        # after it. One that decided before our commit and has not finished deleting has
        # marked them: wait for it to finish, then store any file it took again.
        await _wait_for_deletions(container, sorted(being_deleted))
        for variant, key in zip(variants, keys, strict=True):
            if await storage.size(key) is None:
                await _put_variant(storage, key, variant)


# A purge deletes its marked objects within seconds; while the store is down it is retried for
# storage_retry_window_seconds. Marks older than that (and this margin) belong to a purge that
# was given up: nobody will delete those objects any more.
_MARK_MARGIN_SECONDS = 600.0
DELETION_POLL_SECONDS = 0.2
DELETION_WAIT_SECONDS = 60.0


def _live_marks_since(container: Container) -> datetime:
    window = container.settings.storage_retry_window_seconds + _MARK_MARGIN_SECONDS
    return container.now() - timedelta(seconds=window)


async def _wait_for_deletions(container: Container, keys: list[str]) -> None:
    """Until no purge is deleting these keys. One that takes too long (the store is down)
    makes the job run again later, as any storage fault does; it then stores the files again."""
    deadline = time.monotonic() + DELETION_WAIT_SECONDS
    while keys:
        if time.monotonic() > deadline:
            raise StorageUnavailable(
                f"{len(keys)} stored files are still being deleted by a purge; trying again later."
            )
        await asyncio.sleep(DELETION_POLL_SECONDS)
        async with container.db.read() as session:
            keys = sorted(
                await repository.marked_deleting(session, keys, since=_live_marks_since(container))
            )


async def _key_of(variant: Variant) -> str:
    if isinstance(variant, video.VideoFile):
        return await asyncio.to_thread(service.file_variant_key, variant.path, variant.content_type)
    return service.variant_key(variant.data, variant.content_type)


async def _put_variant(storage: Storage, key: str, variant: Variant) -> None:
    if not isinstance(variant, video.VideoFile):
        await storage.put_bytes(key, variant.data, variant.content_type)
        return
    # put_file consumes the file it is given: hand it a second name of the rendition, so that
    # the rendition is still there should it have to be stored again.
    copy = _staged_name(variant.path.parent, "put-")
    try:
        await asyncio.to_thread(_link_or_copy, variant.path, copy)
    except OSError as exc:
        raise disk_fault(exc, "store files") from exc
    try:
        await storage.put_file(key, copy, variant.content_type)
    finally:
        with contextlib.suppress(OSError):
            copy.unlink(missing_ok=True)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


@job(service.PURGE_KEYS_JOB)
async def purge_media_keys(container: Container, payload: Payload) -> None:
    """Delete stored objects of deleted posts, except those another post still uses
    (variant keys are content-addressed and so may be shared)."""
    keys = [str(k) for k in payload["keys"]]
    # Decide and mark under the write lock, so that a processing job storing the same bytes
    # commits its rows either before (we keep the files) or after: then it sees the marks, and
    # stores its files again once they are gone. The deletes themselves run after the commit:
    # a store that takes seconds (S3, a busy network) never holds the database's write lock.
    async with container.db.write() as session:
        doomed = await repository.unreferenced_keys(session, keys)
        # Marks an earlier run of this job left (it died between its deletes and its
        # unmarking) are kept, and those objects deleted again and unmarked below. A marked key
        # that a row records again is left alone, mark and object: another purge may still be
        # deleting it, and the job that recorded it stores it again once that purge unmarks
        # it; deleting it here too could land after that store and lose a live object.
        await repository.mark_deleting(session, doomed, container.now())
    if not doomed:
        return
    # Should this fail, the marks stay and the job is retried: deletes are idempotent.
    await container.storage.delete_many(doomed)
    async with container.db.write() as session:
        await repository.unmark_deleting(session, doomed)


# An upload stores its originals a moment before the transaction that records them. If the
# process dies in between, nothing points at them; after this long they are litter.
ABANDONED_UPLOAD_SECONDS = 3600
# How far back each sweep looks (workers that were down for a day still catch up).
SWEEP_LOOKBACK_HOURS = 48


@job(service.SWEEP_UPLOADS_JOB, every=3600)
async def sweep_abandoned_uploads(container: Container, payload: Payload) -> None:
    """Delete stored originals that no media row records, and spooled uploads nobody is writing
    any more (both left by uploads cut off by a crash)."""
    swept = await container.storage.sweep_staging()
    if swept:
        log.info("removed %d spooled uploads left by a crash", swept)
    now_ms = int(time.time() * 1000)
    older_than = smallest_id_at(now_ms - ABANDONED_UPLOAD_SECONDS * 1000)
    for hours_ago in range(SWEEP_LOOKBACK_HOURS + 1):
        folder = service.originals_folder(now_ms - hours_ago * 3_600_000)
        candidates = []
        for key in await container.storage.list_keys(folder):
            with contextlib.suppress(ValueError, IndexError):
                if int(key.split("/")[2]) < older_than:  # originals/<hour>/<post id>/<media id>
                    candidates.append(key)
        if not candidates:
            continue
        async with container.db.read() as session:
            recorded = await repository.originals_under(session, folder)
        abandoned = [key for key in candidates if key not in recorded]
        if not abandoned:
            continue
        # The few left are checked again under the write lock, then deleted after the commit
        # (a slow store holds no lock): keys an hour old are recorded by no upload any more,
        # and one whose delete fails is found again by the next sweep.
        async with container.db.write() as session:
            abandoned = await repository.unreferenced_keys(session, abandoned)
        await container.storage.delete_many(abandoned)
