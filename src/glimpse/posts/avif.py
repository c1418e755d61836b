"""AVIF copies of ready photos: which media get them, queueing the job that makes them, and
recording what it made.

A post never waits for AVIF: it is `ready` with its JPEG and WebP variants, and the job that
makes `w1080` and `w640` in AVIF follows (queued in the transaction that makes it ready, or by
`glimpse media backfill-avif` for older posts). Its Media lists the AVIF variants once they
are recorded; until then, and where they never come, clients use the WebP or the JPEG.

Services never commit: the job or the command owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.backends.queue.outbox import enqueue
from glimpse.config import Settings
from glimpse.db.locks import lock_keys
from glimpse.ids import IdGenerator
from glimpse.media import images
from glimpse.posts import repository, service
from glimpse.posts.models import Media, MediaKind, MediaVariant, Post, PostKind, PostStatus

MAKE_AVIF_JOB = "make_avif_variants"


def avif_wanted(settings: Settings) -> bool:
    """Whether new AVIF copies are made here: switched on, and a Pillow that can write AVIF."""
    return settings.avif_enabled and images.avif_available()


def gets_avif(post: Post, media: Media) -> bool:
    """Photos of ready posts. Not stories (a day's life is not worth a second decode), nor
    videos' posters."""
    return (
        post.kind == PostKind.POST
        and post.status == PostStatus.READY
        and media.kind == MediaKind.IMAGE
        and media.status == PostStatus.READY
    )


async def queue_avif_copies(
    session: AsyncSession, ids: IdGenerator, settings: Settings, post: Post
) -> int:
    """One AVIF job per photo of a post that has just become ready; how many were queued."""
    if not avif_wanted(settings) or post.kind != PostKind.POST:
        return 0
    media_ids = await repository.image_media_ids(session, post.id)
    for media_id in media_ids:
        _enqueue(session, ids, settings, media_id, post.author_id)
    return len(media_ids)


async def queue_backfill_batch(
    session: AsyncSession, ids: IdGenerator, settings: Settings, after_media_id: int, limit: int
) -> list[int]:
    """Queue the AVIF job for up to `limit` photos of ready posts that have no AVIF copy yet,
    those with ids above `after_media_id`, in id order; their ids. Running it again queues
    only what still has none (a photo whose job is still waiting gets a second one, which finds
    the copies made and does nothing)."""
    found = await repository.photos_without_avif(session, after_media_id, limit)
    for media_id, author_id in found:
        _enqueue(session, ids, settings, media_id, author_id)
    return [media_id for media_id, _ in found]


def _enqueue(
    session: AsyncSession, ids: IdGenerator, settings: Settings, media_id: int, author_id: int
) -> None:
    enqueue(
        session,
        ids,
        MAKE_AVIF_JOB,
        {"media_id": media_id},
        max_attempts=settings.job_max_attempts,
        owner=author_id,  # claimed fairly among the author's other work, uploads included
    )


async def record_avif_variants(
    session: AsyncSession,
    ids: IdGenerator,
    settings: Settings,
    media_id: int,
    variants: Sequence[images.EncodedVariant],
    keys: Sequence[str],
) -> bool:
    """Record the AVIF copies of a photo (in place of any earlier ones: idempotent). False when
    the photo or its post is gone, or no longer ready: nothing will use the files then, and the
    caller purges them."""
    media = await repository.get_media(session, media_id)
    post = await repository.lock_post(session, media.post_id) if media is not None else None
    if media is None or post is None or not gets_avif(post, media):
        return False
    # In line with any purge of the same keys (see repository.unreferenced_keys).
    await lock_keys(session, keys)
    replaced = await repository.replace_variants(
        session,
        media_id,
        [
            MediaVariant(
                media_id=media_id,
                name=v.name,
                content_type=v.content_type,
                width=v.width,
                height=v.height,
                key=key,
                size_bytes=v.size,
            )
            for v, key in zip(variants, keys, strict=True)
        ],
        avif=True,
    )
    service.schedule_purge(session, ids, settings, sorted(set(replaced) - set(keys)))
    return True
