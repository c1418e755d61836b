"""All SQL of stories, their views and highlights."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Select, bindparam, delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import User
from glimpse.db.base import as_utc
from glimpse.db.database import Database
from glimpse.graph.models import Follow
from glimpse.graph.visibility import blocked_between
from glimpse.posts.models import Media, MediaVariant, Post, PostStatus
from glimpse.stories.models import Highlight, HighlightStory, Story, StoryView


@dataclass(frozen=True)
class StoryRow:
    """A story as its views are built from: its own row and its post's."""

    id: int
    author_id: int
    status: str
    error_code: str | None
    error_message: str | None
    created_at: datetime
    expires_at: datetime


_STORY_COLUMNS = (
    Story.id,
    Story.author_id,
    Post.status,
    Post.error_code,
    Post.error_message,
    Story.created_at,
    Story.expires_at,
)


_StoryQuery = Select[int, int, str, str | None, str | None, datetime, datetime]


def _stories() -> _StoryQuery:
    return select(*_STORY_COLUMNS).join(Post, Post.id == Story.id)


def _row(row: Sequence[Any]) -> StoryRow:
    return StoryRow(*row)


async def add_story(session: AsyncSession, story: Story) -> None:
    session.add(story)
    await session.flush()


# How a write locks the story rows it reads, to the end of its transaction (PostgreSQL; SQLite
# ignores it, its writes being serial): "keep" for one about to insert rows of the story (a view,
# a place in a highlight), so that its deletion cannot commit in between and leave the insert
# facing a foreign key to nothing; "delete" for the deletion, which so waits for those and then
# sees what they added.
RowLock = Literal["keep", "delete"]


def _locking(query: _StoryQuery, lock: RowLock | None) -> _StoryQuery:
    if lock == "keep":
        return query.with_for_update(of=Story, read=True, key_share=True)
    if lock == "delete":
        return query.with_for_update(of=Story)
    return query


async def get_story(
    session: AsyncSession, story_id: int, *, lock: RowLock | None = None
) -> StoryRow | None:
    row = (await session.execute(_locking(_stories().where(Story.id == story_id), lock))).first()
    return _row(row) if row else None


async def live_stories_of(
    session: AsyncSession, author_id: int, now: datetime, ready_only: bool
) -> list[StoryRow]:
    """An account's live stories, oldest first (the order they play in)."""
    query = _stories().where(Story.author_id == author_id, Story.expires_at > now)
    if ready_only:
        query = query.where(Post.status == PostStatus.READY)
    rows = await session.execute(query.order_by(Story.id))
    return [_row(r) for r in rows]


_TRAY = (
    select(
        *_STORY_COLUMNS,
        exists().where(StoryView.story_id == Story.id, StoryView.viewer_id == bindparam("viewer")),
    )
    .select_from(Follow)
    .join(Story, Story.author_id == Follow.followee_id)
    .join(Post, Post.id == Story.id)
    .where(
        Follow.follower_id == bindparam("viewer"),
        Story.expires_at > bindparam("now"),
        Post.status == PostStatus.READY,
        ~blocked_between(bindparam("viewer"), Story.author_id),
    )
)


async def tray(db: Database, viewer_id: int, now: datetime) -> list[tuple[StoryRow, bool]]:
    """Every live, ready story of the accounts the viewer follows, with whether the viewer saw
    it: one statement on the quick path, whatever the number of accounts (per followed account
    a range of the stories index, which holds only what has not expired yet at its end)."""
    rows = await db.fetch(_TRAY, {"viewer": viewer_id, "now": now}, replica=True)
    return [
        (
            StoryRow(r[0], r[1], r[2], r[3], r[4], as_utc(r[5]), as_utc(r[6])),
            bool(r[7]),
        )
        for r in rows
    ]


async def seen_among(session: AsyncSession, viewer_id: int, story_ids: Collection[int]) -> set[int]:
    if not story_ids:
        return set()
    rows = await session.execute(
        select(StoryView.story_id).where(
            StoryView.viewer_id == viewer_id, StoryView.story_id.in_(list(story_ids))
        )
    )
    return set(rows.scalars())


async def add_view(
    session: AsyncSession, story_id: int, viewer_id: int, view_id: int, now: datetime
) -> None:
    """Record the view once: a second one changes nothing (not even the time)."""
    dialect = (await session.connection()).dialect.name
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    await session.execute(
        insert(StoryView)
        .values(story_id=story_id, viewer_id=viewer_id, id=view_id, viewed_at=now)
        .on_conflict_do_nothing(index_elements=[StoryView.story_id, StoryView.viewer_id])
    )


async def viewers_page(
    session: AsyncSession, story_id: int, before: int | None, limit: int
) -> list[tuple[int, User, datetime]]:
    """(view id, viewer, when), the latest views first."""
    query = (
        select(StoryView.id, User, StoryView.viewed_at)
        .join(User, User.id == StoryView.viewer_id)
        .where(StoryView.story_id == story_id)
    )
    if before is not None:
        query = query.where(StoryView.id < before)
    rows = await session.execute(query.order_by(StoryView.id.desc()).limit(limit))
    return [(r[0], r[1], r[2]) for r in rows]


async def archive_page(
    session: AsyncSession, author_id: int, before: int | None, limit: int
) -> list[StoryRow]:
    """The author's stories, expired ones included, newest first."""
    query = _stories().where(Story.author_id == author_id)
    if before is not None:
        query = query.where(Story.id < before)
    rows = await session.execute(query.order_by(Story.id.desc()).limit(limit))
    return [_row(r) for r in rows]


async def stories_by_id(
    session: AsyncSession, story_ids: Collection[int], *, lock: RowLock | None = None
) -> dict[int, StoryRow]:
    if not story_ids:
        return {}
    query = _stories().where(Story.id.in_(list(story_ids))).order_by(Story.id)
    rows = await session.execute(_locking(query, lock))
    return {r[0]: _row(r) for r in rows}


async def held(session: AsyncSession, story_ids: Collection[int]) -> set[int]:
    """Those of these stories that some highlight holds."""
    if not story_ids:
        return set()
    rows = await session.execute(
        select(HighlightStory.story_id).where(HighlightStory.story_id.in_(list(story_ids)))
    )
    return set(rows.scalars())


async def add_highlight(
    session: AsyncSession, highlight: Highlight, story_ids: Sequence[int]
) -> None:
    session.add(highlight)
    await session.flush()
    session.add_all(
        HighlightStory(highlight_id=highlight.id, story_id=story_id, position=position)
        for position, story_id in enumerate(story_ids)
    )
    await session.flush()


async def get_highlight(session: AsyncSession, highlight_id: int) -> Highlight | None:
    return await session.get(Highlight, highlight_id)


async def count_highlights(session: AsyncSession, owner_id: int) -> int:
    rows = await session.execute(
        select(func.count()).select_from(Highlight).where(Highlight.owner_id == owner_id)
    )
    return int(rows.scalar_one())


async def highlights_of(session: AsyncSession, owner_id: int) -> list[Highlight]:
    """Newest first. (Few per account: the profile shows them all.)"""
    rows = await session.execute(
        select(Highlight).where(Highlight.owner_id == owner_id).order_by(Highlight.id.desc())
    )
    return list(rows.scalars())


async def highlight_story_ids(
    session: AsyncSession, highlight_ids: Collection[int]
) -> dict[int, list[int]]:
    """Each highlight's stories, in the order they were given."""
    found: dict[int, list[int]] = {h: [] for h in highlight_ids}
    if found:
        rows = await session.execute(
            select(HighlightStory.highlight_id, HighlightStory.story_id)
            .where(HighlightStory.highlight_id.in_(list(found)))
            .order_by(HighlightStory.highlight_id, HighlightStory.position)
        )
        for highlight_id, story_id in rows:
            found[highlight_id].append(story_id)
    return found


async def delete_highlight(session: AsyncSession, highlight_id: int) -> list[int]:
    """Delete it; the ids of the stories it held."""
    story_ids = (await highlight_story_ids(session, [highlight_id]))[highlight_id]
    await session.execute(delete(HighlightStory).where(HighlightStory.highlight_id == highlight_id))
    await session.execute(delete(Highlight).where(Highlight.id == highlight_id))
    return story_ids


async def media_without_variants(
    session: AsyncSession, story_ids: Collection[int]
) -> list[tuple[int, str]]:
    """(id, kind) of the ready media of these stories whose variants were taken down (by the
    reaper)."""
    if not story_ids:
        return []
    has_variants = exists().where(MediaVariant.media_id == Media.id)
    rows = await session.execute(
        select(Media.id, Media.kind).where(
            Media.post_id.in_(list(story_ids)),
            Media.status == PostStatus.READY,
            ~has_variants,
        )
    )
    return [(media_id, kind) for media_id, kind in rows]


async def expired_unarchived(
    session: AsyncSession, now: datetime, limit: int
) -> list[tuple[int, str]]:
    """(story id, its post's status) of expired stories the reaper has not handled, oldest
    expiry first."""
    rows = await session.execute(
        select(Story.id, Post.status)
        .join(Post, Post.id == Story.id)
        .where(Story.archived.is_(False), Story.expires_at <= now)
        .order_by(Story.expires_at)
        .limit(limit)
    )
    return [(r[0], r[1]) for r in rows]


async def take_down_variants(session: AsyncSession, story_ids: Collection[int]) -> list[str]:
    """Delete the variant rows of these stories' media (their originals stay, for the
    archive and for highlights to publish them again); the keys they named."""
    if not story_ids:
        return []
    media_ids = select(Media.id).where(Media.post_id.in_(list(story_ids))).scalar_subquery()
    keys = await session.execute(
        select(MediaVariant.key).where(MediaVariant.media_id.in_(media_ids)).distinct()
    )
    found = sorted(keys.scalars())
    await session.execute(delete(MediaVariant).where(MediaVariant.media_id.in_(media_ids)))
    return found


async def set_archived(session: AsyncSession, story_ids: Collection[int], archived: bool) -> None:
    if story_ids:
        await session.execute(
            update(Story).where(Story.id.in_(list(story_ids))).values(archived=archived)
        )


async def highlights_holding(session: AsyncSession, story_id: int) -> list[int]:
    rows = await session.execute(
        select(HighlightStory.highlight_id).where(HighlightStory.story_id == story_id)
    )
    return list(rows.scalars())


async def delete_empty_highlights(session: AsyncSession, highlight_ids: Collection[int]) -> None:
    """Delete those of these highlights that hold no story any more (a highlight is 1 to 100
    stories: an empty one would show nothing)."""
    if not highlight_ids:
        return
    holding = exists().where(HighlightStory.highlight_id == Highlight.id)
    await session.execute(delete(Highlight).where(Highlight.id.in_(list(highlight_ids)), ~holding))
