"""Stories as API.md shows them: a fixed number of statements for any number of stories.

A story's media is always linked with signed URLs (never the plain, immutable ones of public
posts, which CDNs would keep for a year): while the story lives they stop working at its
expiry; once it has expired, only a highlight keeps them (with the usual signing window).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import User
from glimpse.accounts.schemas import UserSummary
from glimpse.media.urls import MediaUrls
from glimpse.posts.schemas import MediaOut, PostError
from glimpse.posts.views import media_views_of
from glimpse.stories.lifetime import media_shown, url_deadline
from glimpse.stories.repository import StoryRow
from glimpse.stories.schemas import StoryOut


async def author_summaries(
    session: AsyncSession, user_ids: Collection[int]
) -> dict[int, UserSummary]:
    if not user_ids:
        return {}
    rows = await session.execute(
        select(User.id, User.username, User.display_name).where(User.id.in_(list(user_ids)))
    )
    return {r[0]: UserSummary(id=r[0], username=r[1], display_name=r[2]) for r in rows}


async def story_views(
    session: AsyncSession,
    stories: Sequence[StoryRow],
    viewer_id: int,
    now: datetime,
    media_urls: MediaUrls,
    *,
    seen: Collection[int] = (),
    held: Collection[int] = (),
) -> list[StoryOut]:
    """`seen`: the stories the viewer has viewed; `held`: those a highlight holds."""
    if not stories:
        return []
    by_id = {story.id: story for story in stories}
    authors = await author_summaries(session, {story.author_id for story in stories})

    def url_of(story_id: int, key: str) -> str | None:
        story = by_id[story_id]
        kept = story_id in held
        if not media_shown(story.expires_at, now, kept):
            return None
        deadline = url_deadline(story.expires_at, kept)
        return media_urls.url(key, public=False, viewer=viewer_id, not_after=deadline)

    media = await media_views_of(session, list(by_id), url_of)
    return [
        StoryOut(
            id=story.id,
            author=authors[story.author_id],
            status=story.status,
            error=PostError(code=story.error_code, message=story.error_message or "")
            if story.error_code
            else None,
            created_at=story.created_at,
            expires_at=story.expires_at,
            seen=story.author_id == viewer_id or story.id in seen,
            media=MediaOut.model_validate(media[story.id][0]),
        )
        for story in stories
    ]
