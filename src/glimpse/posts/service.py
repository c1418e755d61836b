"""Posts: creating, showing, listing and deleting them, and recording what processing made.

Services never commit: the route or the job owns the transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import and_
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts import repository as accounts_repository
from glimpse.accounts.models import User
from glimpse.accounts.schemas import Quota, Usage
from glimpse.backends.queue.outbox import enqueue
from glimpse.config import Settings
from glimpse.db.base import utcnow
from glimpse.db.locks import lock_keys
from glimpse.engagement import repository as engagement_repository
from glimpse.errors import Forbidden, Invalid, NotFound, Throttled, Unauthenticated
from glimpse.feed.names import FAN_OUT_JOB, UNFAN_OUT_JOB
from glimpse.graph import repository as graph_repository
from glimpse.graph import service as graph
from glimpse.graph.visibility import can_see_post, post_visible_to, still_shown
from glimpse.ids import IdGenerator, id_timestamp_ms
from glimpse.media.filters import FILTERS
from glimpse.media.images import ProcessedImage
from glimpse.media.video import ProcessedVideo
from glimpse.posts import repository
from glimpse.posts.models import Media, MediaKind, MediaVariant, Post, PostKind, PostStatus
from glimpse.text import is_clean_multi_line

# An id no account has (ids are never negative): what a missing post's author is looked up as.
NO_SUCH_USER = -1

PROCESS_MEDIA_JOB = "process_media"
TRANSCODE_VIDEO_JOB = "transcode_video"
PURGE_KEYS_JOB = "purge_media_keys"
SWEEP_UPLOADS_JOB = "sweep_abandoned_uploads"

_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/avif": "avif",
    "video/mp4": "mp4",
}


@dataclass(frozen=True)
class NewMedia:
    """A validated upload, already stored under its private original key."""

    media_id: int
    original_key: str
    media_type: str
    size: int
    alt_text: str
    kind: str = MediaKind.IMAGE
    duration_s: float | None = None  # a video's, as its container declares it


def processing_job(media_kind: str) -> str:
    """The job that makes a media item's variants: a photo's, or a video's transcode (which
    runs in a lane of its own)."""
    return TRANSCODE_VIDEO_JOB if media_kind == MediaKind.VIDEO else PROCESS_MEDIA_JOB


def max_video_seconds(settings: Settings, kind: str) -> float:
    """The longest video a post (90 s by default) or a story (60 s) may hold."""
    return (
        settings.max_story_video_seconds if kind == PostKind.STORY else settings.max_video_seconds
    )


def original_key(post_id: int, media_id: int) -> str:
    """Private, one per media item. Filed by the hour the post was made, so that the sweep
    of abandoned uploads lists a few small folders instead of every original ever stored."""
    return f"{originals_folder(id_timestamp_ms(post_id))}/{post_id}/{media_id}"


def originals_folder(unix_ms: int) -> str:
    return "originals/" + datetime.fromtimestamp(unix_ms / 1000, UTC).strftime("%Y%m%d%H")


def variant_key(data: bytes, content_type: str) -> str:
    """Content-addressed: the same bytes always get the same key, and a key is never reused for
    other bytes, which is what lets the origin mark them immutable."""
    return _key_of(hashlib.sha256(data).hexdigest(), content_type)


def file_variant_key(path: Path, content_type: str) -> str:
    """`variant_key` of a file's bytes, read a megabyte at a time (a video's renditions are
    tens of megabytes)."""
    with open(path, "rb") as f:
        return _key_of(hashlib.file_digest(f, "sha256").hexdigest(), content_type)


def _key_of(digest: str, content_type: str) -> str:
    return f"v/{digest[:2]}/{digest}.{_EXTENSIONS[content_type]}"


def check_post_fields(
    caption: str | None,
    filter_name: str | None,
    alt_texts: list[str],
    file_count: int,
    settings: Settings,
) -> tuple[str, str]:
    caption = caption or ""
    if len(caption) > settings.max_caption_chars:
        raise Invalid(
            f"A caption may be at most {settings.max_caption_chars} characters.",
            code="caption_too_long",
        )
    filter_name = filter_name or "normal"
    if filter_name not in FILTERS:
        raise Invalid(f"There is no filter named {filter_name!r}.", code="unknown_filter")
    if file_count == 0:
        raise Invalid("A post needs at least one file.", code="no_files")
    if len(alt_texts) > file_count:
        raise Invalid("There are more alt texts than files.", code="too_many_alt_texts")
    if any(len(a) > settings.max_caption_chars for a in alt_texts):
        raise Invalid("An alt text is too long.", code="alt_text_too_long")
    if not all(is_clean_multi_line(text) for text in (caption, *alt_texts)):
        raise Invalid(
            "Captions and alt texts may not contain control characters or invisible ones"
            " (bidi overrides, zero-width and tag characters).",
            code="invalid_text",
        )
    return caption, filter_name


def utc_day(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def _seconds_to_midnight(now: datetime) -> int:
    midnight = (now.astimezone(UTC) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return int((midnight - now).total_seconds()) + 1


async def usage(session: AsyncSession, user_id: int, now: datetime | None = None) -> Usage:
    uploads, size = await repository.usage_on(session, user_id, utc_day(now or utcnow()))
    return Usage(
        uploads_today=uploads,
        bytes_today=size,
        bytes_stored=await repository.bytes_stored(session, user_id),
    )


def quota(settings: Settings) -> Quota:
    return Quota(
        uploads_per_day=settings.quota_uploads_per_day or None,
        bytes_per_day=settings.quota_bytes_per_day or None,
        bytes_stored=settings.quota_bytes_stored or None,
    )


async def check_quota(
    session: AsyncSession,
    settings: Settings,
    user_id: int,
    new_bytes: int,
    now: datetime | None = None,
) -> None:
    """Raise Throttled when one more upload of `new_bytes` would pass a quota."""
    now = now or utcnow()
    if not (
        settings.quota_uploads_per_day
        or settings.quota_bytes_per_day
        or settings.quota_bytes_stored
    ):
        return
    used = await usage(session, user_id, now)
    retry = _seconds_to_midnight(now)
    if settings.quota_uploads_per_day and used.uploads_today + 1 > settings.quota_uploads_per_day:
        raise Throttled(
            "You have reached today's upload limit.", retry_after=retry, code="quota_uploads"
        )
    if settings.quota_bytes_per_day and used.bytes_today + new_bytes > settings.quota_bytes_per_day:
        raise Throttled(
            "This upload would pass today's size limit.", retry_after=retry, code="quota_bytes"
        )
    if settings.quota_bytes_stored and used.bytes_stored + new_bytes > settings.quota_bytes_stored:
        # Space comes back only when the account deletes posts; a day's wait does not help.
        raise Throttled(
            "Your account is out of storage space.", retry_after=86400, code="quota_storage"
        )


async def create_post(
    session: AsyncSession,
    ids: IdGenerator,
    settings: Settings,
    *,
    post_id: int,
    author_id: int,
    caption: str,
    filter_name: str,
    media: Sequence[NewMedia],
    kind: str = PostKind.POST,
    now: datetime | None = None,
) -> Post:
    """Insert the post (or story: `kind`), its media and one processing job per media item,
    all in the caller's transaction (the jobs table is the outbox)."""
    now = now or utcnow()
    if not await accounts_repository.lock_active_user(session, author_id):
        # Its token was good when the upload began; the account has been erased (or disabled)
        # while the body arrived. Refused as the token now is, and nothing inserted for it.
        raise Unauthenticated("The token is missing, expired or revoked.", code="invalid_token")
    await check_quota(session, settings, author_id, sum(m.size for m in media), now)
    post = Post(
        id=post_id,
        author_id=author_id,
        kind=kind,
        caption=caption,
        filter_name=filter_name,
        status=PostStatus.PROCESSING,
        like_count=0,
        comment_count=0,
        created_at=now,
    )
    session.add(post)
    await session.flush()  # the post row before its media: foreign keys are checked per statement
    for position, m in enumerate(media):
        session.add(
            Media(
                id=m.media_id,
                post_id=post_id,
                author_id=author_id,
                position=position,
                kind=m.kind,
                status=PostStatus.PROCESSING,
                original_key=m.original_key,
                original_type=m.media_type,
                original_bytes=m.size,
                alt_text=m.alt_text,
                duration_s=m.duration_s,
                progress=0 if m.kind == MediaKind.VIDEO else None,
                created_at=now,
            )
        )
    await session.flush()
    for m in media:
        enqueue(
            session,
            ids,
            processing_job(m.kind),
            {"media_id": m.media_id},
            max_attempts=settings.job_max_attempts,
            owner=author_id,
        )
    await repository.add_usage(session, author_id, utc_day(now), 1, sum(m.size for m in media))
    return post


async def can_see(session: AsyncSession, post: Post, author: User, viewer_id: int) -> bool:
    """graph.visibility's rule for one loaded post. The graph is asked whatever the post's
    state, so that a post one may not see takes as long to refuse as one that is not there."""
    if post.author_id == viewer_id:
        return True
    relation = await graph_repository.relation(session, viewer_id, post.author_id)
    return can_see_post(viewer_id, post.status, post.author_id, author.is_private, relation)


async def list_profile_posts(
    session: AsyncSession, username: str, viewer_id: int, before_id: int | None, limit: int
) -> tuple[list[Post], bool]:
    """One page of a user's ready posts, newest first, and whether more follow. 404 for an
    account that blocks the viewer, 403 for a private one the viewer does not follow."""
    author = await graph.visible_content_owner(session, username, viewer_id)
    posts = await repository.list_ready_posts_by_author(session, author.id, before_id, limit + 1)
    return posts[:limit], len(posts) > limit


async def get_visible_post(session: AsyncSession, post_id: int, viewer_id: int) -> Post:
    """The post if the viewer may see it, else NotFound. (A write that adds rows of the post,
    a like or a comment, checks it with visible_post_status, which keeps its row.)"""
    post = await repository.get_post(session, post_id)
    if post is not None and post.kind == PostKind.POST:  # (a story is no post: stories/)
        authors = await repository.load_authors(session, {post.author_id})
        if await can_see(session, post, authors[post.author_id], viewer_id):
            return post
    else:
        # The same statements as for a post the viewer may not see: how long a 404 takes
        # must not tell whether a private post exists.
        await repository.load_authors(session, {NO_SUCH_USER})
        await graph_repository.relation(session, viewer_id, NO_SUCH_USER)
    raise NotFound("No such post.", code="post_not_found")


async def visible_post_status(
    session: AsyncSession, post_id: int, viewer_id: int, *, keep: bool = False
) -> str:
    """get_visible_post's check alone, for a write that needs no more of the post than that
    it may be seen and its status (a like, a comment; `keep`: its row kept from deletion until
    the write commits, repository.visible_post_status): one statement, where get_visible_post
    runs five, and each is a few turns of the event loop inside the write's turn (a like
    under a saturating read load took 31 turns, 220 ms: bench/bench_likes.py). A post one
    may not see and one that is not there take the same single statement."""
    status = await repository.visible_post_status(session, post_id, viewer_id, keep=keep)
    if status is None:
        raise NotFound("No such post.", code="post_not_found")
    return status


async def media_visibility(session: AsyncSession, key: str) -> str | None:
    """ "public" when a ready post of a public account uses this stored variant, "private"
    when only other posts do (private accounts, posts still processing), None when no post
    uses it (deleted, or never finished): the origin then answers 404."""
    audience = await repository.key_audience(session, key)
    if not audience:
        return None
    # A story's media is never public: it must stop being served when the story expires, and
    # a CDN would keep an immutable copy for a year.
    public = any(
        status == PostStatus.READY and not private and kind == PostKind.POST
        for status, private, kind in audience
    )
    return "public" if public else "private"


async def key_visible_to(
    session: AsyncSession, key: str, viewer_id: int, now: datetime | None = None
) -> bool:
    """Whether some post that uses this stored variant is one the viewer may see (a story
    only while it lives, or while a highlight holds it)."""
    return await repository.key_used_by_post_matching(
        session, key, and_(post_visible_to(viewer_id), still_shown(now or utcnow()))
    )


async def delete_post(
    session: AsyncSession, ids: IdGenerator, settings: Settings, post_id: int, viewer_id: int
) -> None:
    """Delete the post and, after a grace period, whatever stored media no other post uses."""
    post = await repository.lock_post(session, post_id)
    if post is None or post.kind != PostKind.POST:
        raise NotFound("No such post.", code="post_not_found")
    if post.author_id != viewer_id:
        authors = await repository.load_authors(session, {post.author_id})
        if await can_see(session, post, authors[post.author_id], viewer_id):
            raise Forbidden("Only the author may delete a post.", code="not_author")
        raise NotFound("No such post.", code="post_not_found")
    keys = await repository.keys_of_post(session, post_id)
    if post.status == PostStatus.READY:
        await repository.change_post_count(session, post.author_id, -1)
        # Feeds already skip a post that is gone; this takes its entries out of them.
        enqueue(
            session,
            ids,
            UNFAN_OUT_JOB,
            {"post_id": post_id, "author_id": post.author_id},
            max_attempts=settings.job_max_attempts,
            owner=post.author_id,
        )
    await engagement_repository.delete_of_post(session, post_id)
    await repository.delete_post(session, post_id)
    schedule_purge(session, ids, settings, keys)


def schedule_purge(
    session: AsyncSession,
    ids: IdGenerator,
    settings: Settings,
    keys: Sequence[str],
    *,
    delay_seconds: float | None = None,
) -> None:
    """Delete these stored objects after the grace period (or `delay_seconds`), unless a post
    uses them by then."""
    if keys:
        enqueue(
            session,
            ids,
            PURGE_KEYS_JOB,
            {"keys": list(keys)},
            max_attempts=settings.job_max_attempts,
            delay_seconds=settings.media_gc_delay_seconds
            if delay_seconds is None
            else delay_seconds,
        )


async def record_processed_media(
    session: AsyncSession,
    ids: IdGenerator,
    settings: Settings,
    media: Media,
    processed: ProcessedImage | ProcessedVideo,
    keys: Sequence[str],
    now: datetime | None = None,
    *,
    heal: bool = False,
) -> bool:
    """Store what processing made and finish the post when it was the last media item, with
    the job that delivers it to its author's followers' feeds. Idempotent: once a run has
    recorded the media's renditions, a run again records nothing (and the post is ready only
    once), unless `heal`: the run found files of those renditions missing (a purge of another
    post with the same bytes took them while the first run recorded, and that run was cut short
    before it stored them again), and records its own. False when nothing now uses the files
    (the caller purges them)."""
    post = await repository.lock_post(session, media.post_id)
    if post is None:
        return False
    # Asked under the post's lock, which the run that recorded first held until it committed.
    if not heal and await repository.recorded_renditions(session, media.id):
        # The job was delivered again (its worker died before settling it, or its lease lapsed
        # while it worked on). The first run's renditions stay: a second set, of other bytes (a
        # video encoder need not be bit-exact), would replace files that pages and summaries
        # kept in other processes link, and that clients have already been sent.
        return False
    # A story that expired outside every highlight meanwhile (its highlight deleted while its
    # media was being published again, say) keeps no variants: the reaper may have passed it
    # already. It finishes as the reaper would leave it, and its files are purged.
    shown = post.kind == PostKind.POST or await repository.post_matches(
        session, post.id, still_shown(now or utcnow())
    )
    # In line with any purge of the same keys (see repository.unreferenced_keys).
    await lock_keys(session, keys)
    replaced = await repository.replace_variants(
        session,
        media.id,
        [
            MediaVariant(
                media_id=media.id,
                name=v.name,
                content_type=v.content_type,
                width=v.width,
                height=v.height,
                key=key,
                size_bytes=v.size,
            )
            for v, key in zip(processed.variants, keys, strict=True)
        ]
        if shown
        else [],
    )
    # Only a story's media published again for a highlight had renditions before (the reaper
    # took them down; its keys are purged already, unless still used).
    schedule_purge(session, ids, settings, sorted(set(replaced) - set(keys)))
    media.width, media.height, media.blurhash = (
        processed.width,
        processed.height,
        processed.blurhash,
    )
    if isinstance(processed, ProcessedVideo):
        media.duration_s, media.progress = processed.duration_s, None
    media.status = PostStatus.READY
    session.add(media)
    await session.flush()
    # A story is not counted, nor fanned out to feeds: the tray reads stories where they are.
    if (
        await repository.mark_post_ready_if_complete(session, post.id)
        and post.kind == PostKind.POST
    ):
        await repository.change_post_count(session, post.author_id, +1)
        enqueue(
            session,
            ids,
            FAN_OUT_JOB,
            {"post_id": post.id},
            max_attempts=settings.job_max_attempts,
            owner=post.author_id,
        )
        # Only now: the post is served as it is, and never waits for its AVIF copies.
        from glimpse.posts import avif  # (it records through this module's schedule_purge)

        await avif.queue_avif_copies(session, ids, settings, post)
    return shown


async def record_progress(session: AsyncSession, media_id: int, percent: int) -> None:
    """How far a video's transcode has got, for its author to see while the post processes."""
    await repository.set_progress(session, media_id, percent)


async def reopen_failed_media(session: AsyncSession, media_id: int) -> None:
    """A failed media item is to be processed again (an operator retries its dead job): it is
    `processing` again, and so is its post once none of its media is failed any more."""
    media = await repository.get_media(session, media_id)
    if media is None or media.status != PostStatus.FAILED:
        return
    post = await repository.lock_post(session, media.post_id)
    media.status = PostStatus.PROCESSING
    await session.flush()
    if post is None or post.status != PostStatus.FAILED:
        return
    if not await repository.post_has_failed_media(session, post.id):
        post.status = PostStatus.PROCESSING
        post.error_code = post.error_message = None


async def fail_media(session: AsyncSession, media_id: int, code: str, message: str) -> None:
    """A media item cannot be processed: the post fails with a reason its author can read."""
    media = await repository.get_media(session, media_id)
    if media is None or media.status == PostStatus.READY:
        return  # gone, or a run that outlived its lease finished it after all
    post = await repository.lock_post(session, media.post_id)
    # Read again under the lock, which such a run holds while it records (PostgreSQL read the
    # row above as it was before that run committed).
    await session.refresh(media, ["status"])
    if media.status == PostStatus.READY:
        return
    media.status = PostStatus.FAILED
    if post is not None and post.status == PostStatus.PROCESSING:
        post.status = PostStatus.FAILED
        post.error_code = code
        post.error_message = message
