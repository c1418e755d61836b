"""All SQL of posts, their media and upload usage."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import User
from glimpse.db.locks import lock_keys
from glimpse.graph.visibility import post_visible_to
from glimpse.media.images import AVIF, AVIF_VARIANT_NAMES
from glimpse.posts.models import (
    Media,
    MediaKind,
    MediaVariant,
    ObjectDeletion,
    Post,
    PostKind,
    PostStatus,
    UploadUsage,
)


async def get_post(session: AsyncSession, post_id: int) -> Post | None:
    return await session.get(Post, post_id)


async def lock_post(session: AsyncSession, post_id: int) -> Post | None:
    # FOR UPDATE serialises the last two media of a post finishing at once on PostgreSQL;
    # SQLite ignores it (its write transactions are serial already).
    result = await session.execute(select(Post).where(Post.id == post_id).with_for_update())
    return result.scalar_one_or_none()


async def visible_post_status(
    session: AsyncSession, post_id: int, viewer_id: int, *, keep: bool = False
) -> str | None:
    """The status of the post if it is one the viewer may see (graph.visibility's SQL form),
    else None, in one statement.

    `keep`: its row kept from deletion to the end of the transaction on PostgreSQL (FOR KEY
    SHARE: a deletion committed between a check and the insert of a like or comment would
    leave the insert facing a foreign key to nothing; likes and comments of one post, and their
    counter updates, still run side by side). SQLite ignores it: its writes are serial."""
    query = select(Post.status).where(
        Post.id == post_id, Post.kind == PostKind.POST, post_visible_to(viewer_id)
    )
    if keep:
        query = query.with_for_update(read=True, key_share=True, of=Post)
    return (await session.execute(query)).scalar_one_or_none()


async def get_media(session: AsyncSession, media_id: int) -> Media | None:
    return await session.get(Media, media_id)


async def load_authors(session: AsyncSession, user_ids: set[int]) -> dict[int, User]:
    if not user_ids:
        return {}
    result = await session.execute(select(User).where(User.id.in_(user_ids)))
    return {u.id: u for u in result.scalars()}


async def list_ready_posts_by_author(
    session: AsyncSession, author_id: int, before_id: int | None, limit: int
) -> list[Post]:
    query = select(Post).where(
        Post.author_id == author_id, Post.kind == PostKind.POST, Post.status == PostStatus.READY
    )
    if before_id is not None:
        query = query.where(Post.id < before_id)
    result = await session.execute(query.order_by(Post.id.desc()).limit(limit))
    return list(result.scalars())


async def key_audience(session: AsyncSession, key: str) -> list[tuple[str, bool, str]]:
    """(post status, author is private, post kind) for every post whose media uses this
    variant key."""
    rows = await session.execute(
        select(Post.status, User.is_private, Post.kind)
        .select_from(MediaVariant)
        .join(Media, Media.id == MediaVariant.media_id)
        .join(Post, Post.id == Media.post_id)
        .join(User, User.id == Post.author_id)
        .where(MediaVariant.key == key)
    )
    return [(status, is_private, kind) for status, is_private, kind in rows]


async def key_used_by_post_matching(
    session: AsyncSession, key: str, condition: ColumnElement[bool]
) -> bool:
    """Whether a post that meets `condition` uses this variant key."""
    row = await session.execute(
        select(Post.id)
        .select_from(MediaVariant)
        .join(Media, Media.id == MediaVariant.media_id)
        .join(Post, Post.id == Media.post_id)
        .where(MediaVariant.key == key, condition)
        .limit(1)
    )
    return row.first() is not None


async def post_matches(session: AsyncSession, post_id: int, condition: ColumnElement[bool]) -> bool:
    row = await session.execute(select(Post.id).where(Post.id == post_id, condition))
    return row.first() is not None


async def keys_of_post(session: AsyncSession, post_id: int) -> list[str]:
    originals = await session.execute(select(Media.original_key).where(Media.post_id == post_id))
    variants = await session.execute(
        select(MediaVariant.key)
        .join(Media, Media.id == MediaVariant.media_id)
        .where(Media.post_id == post_id)
    )
    return sorted({*originals.scalars(), *variants.scalars()})


async def delete_post(session: AsyncSession, post_id: int) -> None:
    # Explicit children first: foreign-key cascades are not switched on everywhere.
    media_ids = select(Media.id).where(Media.post_id == post_id).scalar_subquery()
    await session.execute(delete(MediaVariant).where(MediaVariant.media_id.in_(media_ids)))
    await session.execute(delete(Media).where(Media.post_id == post_id))
    await session.execute(delete(Post).where(Post.id == post_id))


# Keys asked about per statement: well under SQLite's limit on bound variables.
_KEYS_PER_QUERY = 500


async def unreferenced_keys(session: AsyncSession, keys: Sequence[str]) -> list[str]:
    """Those of `keys` that no media row uses, as an original or as a variant. The keys stay
    locked until the caller's transaction ends (db/locks.py), so a processing job recording the
    same bytes commits either before this check or after the caller's delete, never between."""
    await lock_keys(session, keys)
    used: set[str] = set()
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        batch = keys[start : start + _KEYS_PER_QUERY]
        variants = await session.execute(
            select(MediaVariant.key).where(MediaVariant.key.in_(batch)).distinct()
        )
        originals = await session.execute(
            select(Media.original_key).where(Media.original_key.in_(batch))
        )
        used.update(variants.scalars(), originals.scalars())
    return [k for k in keys if k not in used]


async def mark_deleting(session: AsyncSession, keys: Sequence[str], now: datetime) -> None:
    """Mark these objects as being deleted (a mark already there is kept, with its time)."""
    dialect = (await session.connection()).dialect.name
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        batch = keys[start : start + _KEYS_PER_QUERY]
        await session.execute(
            insert(ObjectDeletion)
            .values([{"key": k, "marked_at": now} for k in batch])
            .on_conflict_do_nothing(index_elements=[ObjectDeletion.key])
        )


async def marked_deleting(
    session: AsyncSession, keys: Sequence[str], since: datetime | None = None
) -> set[str]:
    """Those of `keys` a purge has marked for deletion (since `since`, when given)."""
    marked: set[str] = set()
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        query = select(ObjectDeletion.key).where(
            ObjectDeletion.key.in_(keys[start : start + _KEYS_PER_QUERY])
        )
        if since is not None:
            query = query.where(ObjectDeletion.marked_at >= since)
        marked.update((await session.execute(query)).scalars())
    return marked


async def unmark_deleting(session: AsyncSession, keys: Sequence[str]) -> None:
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        batch = keys[start : start + _KEYS_PER_QUERY]
        await session.execute(delete(ObjectDeletion).where(ObjectDeletion.key.in_(batch)))


async def originals_under(session: AsyncSession, folder: str) -> set[str]:
    """Original keys recorded under `folder/` (one range scan of the original_key index)."""
    # "/" sorts just before "0": [folder + "/", folder + "0") is everything under folder/.
    result = await session.execute(
        select(Media.original_key).where(
            Media.original_key >= folder + "/", Media.original_key < folder + "0"
        )
    )
    return set(result.scalars())


async def set_progress(session: AsyncSession, media_id: int, percent: int) -> None:
    # Only while it is processing: a late report must not touch a finished (or failed) item.
    await session.execute(
        update(Media)
        .where(Media.id == media_id, Media.status == PostStatus.PROCESSING)
        .values(progress=percent)
    )


async def replace_variants(
    session: AsyncSession, media_id: int, variants: Sequence[MediaVariant], *, avif: bool = False
) -> list[str]:
    """Put these variants in place of the media's that the same job makes: its AVIF copies
    (`avif`), or every other variant (a processing job run again leaves the AVIF copies alone:
    they are of the same original); the keys of the replaced ones."""
    made_by_the_same_job = (
        MediaVariant.content_type == AVIF if avif else MediaVariant.content_type != AVIF
    )
    replaced = await session.execute(
        delete(MediaVariant)
        .where(MediaVariant.media_id == media_id, made_by_the_same_job)
        .returning(MediaVariant.key)
    )
    session.add_all(variants)
    return list(replaced.scalars())


async def recorded_renditions(session: AsyncSession, media_id: int) -> list[str]:
    """The keys of the renditions a processing run recorded for this media: its variants of
    its own (not its AVIF copies) once it is ready; none before. (A story's media that the
    reaper took down is ready with none, and is processed again for a highlight.)"""
    result = await session.execute(
        select(MediaVariant.key)
        .join(Media, Media.id == MediaVariant.media_id)
        .where(
            Media.id == media_id,
            Media.status == PostStatus.READY,
            MediaVariant.content_type != AVIF,
        )
    )
    return list(result.scalars())


async def image_media_ids(session: AsyncSession, post_id: int) -> list[int]:
    result = await session.execute(
        select(Media.id)
        .where(Media.post_id == post_id, Media.kind == MediaKind.IMAGE)
        .order_by(Media.position)
    )
    return list(result.scalars())


async def has_avif_copies(session: AsyncSession, media_id: int) -> bool:
    """Whether every AVIF copy of this photo is recorded."""
    result = await session.execute(
        select(func.count())
        .select_from(MediaVariant)
        .where(MediaVariant.media_id == media_id, MediaVariant.content_type == AVIF)
    )
    return int(result.scalar_one()) >= len(AVIF_VARIANT_NAMES)


async def photos_without_avif(
    session: AsyncSession, after_media_id: int, limit: int
) -> list[tuple[int, int]]:
    """(media id, author id) of photos of ready posts with no AVIF copy, ids above
    `after_media_id`, in id order (a walk by primary key: each batch starts where the last one
    ended, however many there are)."""
    has_avif = exists().where(MediaVariant.media_id == Media.id, MediaVariant.content_type == AVIF)
    result = await session.execute(
        select(Media.id, Media.author_id)
        .join(Post, Post.id == Media.post_id)
        .where(
            Media.id > after_media_id,
            Media.kind == MediaKind.IMAGE,
            Media.status == PostStatus.READY,
            Post.kind == PostKind.POST,
            Post.status == PostStatus.READY,
            ~has_avif,
        )
        .order_by(Media.id)
        .limit(limit)
    )
    return [(media_id, author_id) for media_id, author_id in result]


async def mark_post_ready_if_complete(session: AsyncSession, post_id: int) -> bool:
    """Flip the post to ready when no media of it is left unfinished; True if this call did it."""
    unfinished = exists().where(Media.post_id == post_id, Media.status != PostStatus.READY)
    result = await session.execute(
        update(Post)
        .where(Post.id == post_id, Post.status == PostStatus.PROCESSING, ~unfinished)
        .values(status=PostStatus.READY)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def post_has_failed_media(session: AsyncSession, post_id: int) -> bool:
    failed = exists().where(Media.post_id == post_id, Media.status == PostStatus.FAILED)
    return bool((await session.execute(select(failed))).scalar())


async def change_post_count(session: AsyncSession, user_id: int, delta: int) -> None:
    await session.execute(
        update(User).where(User.id == user_id).values(post_count=User.post_count + delta)
    )


async def usage_on(session: AsyncSession, user_id: int, day: str) -> tuple[int, int]:
    row = (
        await session.execute(
            select(UploadUsage.uploads, UploadUsage.bytes).where(
                UploadUsage.user_id == user_id, UploadUsage.day == day
            )
        )
    ).first()
    return (row[0], row[1]) if row else (0, 0)


async def bytes_stored(session: AsyncSession, user_id: int) -> int:
    originals = await session.execute(
        select(func.coalesce(func.sum(Media.original_bytes), 0)).where(Media.author_id == user_id)
    )
    variants = await session.execute(
        select(func.coalesce(func.sum(MediaVariant.size_bytes), 0))
        .join(Media, Media.id == MediaVariant.media_id)
        .where(Media.author_id == user_id)
    )
    return int(originals.scalar_one()) + int(variants.scalar_one())


async def add_usage(session: AsyncSession, user_id: int, day: str, uploads: int, size: int) -> None:
    dialect = (await session.connection()).dialect.name
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    statement = insert(UploadUsage).values(user_id=user_id, day=day, uploads=uploads, bytes=size)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[UploadUsage.user_id, UploadUsage.day],
            set_={
                "uploads": UploadUsage.uploads + statement.excluded.uploads,
                "bytes": UploadUsage.bytes + statement.excluded.bytes,
            },
        )
    )
