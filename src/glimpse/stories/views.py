"""Stories as API.md shows them: three statements for any number of stories (authors, media,
variants), through the quick path (Database.fetch) or a session, built as plain JSON values
(the tray serialises hundreds at once: a model per story would be most of its cost).

A story's media is always linked with signed URLs (never the plain, immutable ones of public
posts, which CDNs would keep for a year): while the story lives they stop working at its
expiry; once it has expired, only a highlight keeps them (with the usual signing window).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import User
from glimpse.db.database import Database
from glimpse.media.urls import MediaUrls
from glimpse.posts.views import fetch_rows, media_views_of, rfc3339
from glimpse.stories.lifetime import media_shown, url_deadline
from glimpse.stories.repository import StoryRow

_AUTHORS = select(User.id, User.username, User.display_name).where(
    User.id.in_(bindparam("ids", expanding=True))
)


async def author_summaries(
    source: Database | AsyncSession, user_ids: Collection[int]
) -> dict[int, dict[str, Any]]:
    """User summaries (API.md) as JSON values, by id."""
    if not user_ids:
        return {}
    rows = await fetch_rows(source, _AUTHORS, {"ids": sorted(user_ids)})
    return {r[0]: {"id": str(r[0]), "username": r[1], "display_name": r[2]} for r in rows}


async def story_view_data(
    source: Database | AsyncSession,
    stories: Sequence[StoryRow],
    viewer_id: int,
    now: datetime,
    media_urls: MediaUrls,
    *,
    seen: Collection[int] = (),
    held: Collection[int] = (),
) -> list[dict[str, Any]]:
    """Stories as the JSON values of StoryOut. `seen`: those the viewer has viewed; `held`:
    those a highlight holds."""
    if not stories:
        return []
    by_id = {story.id: story for story in stories}
    authors = await author_summaries(source, {story.author_id for story in stories})

    def url_of(story_id: int, key: str) -> str | None:
        story = by_id[story_id]
        kept = story_id in held
        if not media_shown(story.expires_at, now, kept):
            return None
        deadline = url_deadline(story.expires_at, kept)
        return media_urls.url(key, public=False, viewer=viewer_id, not_after=deadline)

    media = await media_views_of(source, list(by_id), url_of)
    views = []
    for story in stories:
        view: dict[str, Any] = {
            "id": str(story.id),
            "author": authors[story.author_id],
            "status": story.status,
            "created_at": rfc3339(story.created_at),
            "expires_at": rfc3339(story.expires_at),
            "seen": story.author_id == viewer_id or story.id in seen,
            "media": media[story.id][0],
        }
        if story.error_code:
            view["error"] = {"code": story.error_code, "message": story.error_message or ""}
        views.append(view)
    return views
