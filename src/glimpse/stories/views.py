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
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import User
from glimpse.db.database import Database
from glimpse.media.urls import MediaUrls
from glimpse.posts.schemas import MediaOut
from glimpse.posts.views import fetch_rows, media_views_of, rfc3339
from glimpse.stories import repository
from glimpse.stories.lifetime import media_shown, url_deadline
from glimpse.stories.models import Highlight
from glimpse.stories.repository import StoryRow
from glimpse.stories.schemas import HighlightOut, StoryOut

if TYPE_CHECKING:
    from glimpse.container import Container

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


async def highlight_views(
    session: AsyncSession, container: Container, highlights: list[Highlight], viewer_id: int
) -> list[HighlightOut]:
    """Highlights as API.md shows them: each with the stories the viewer may see, and a cover."""
    story_ids = await repository.highlight_story_ids(session, [h.id for h in highlights])
    every_id = {s for ids in story_ids.values() for s in ids}
    stories = await repository.stories_by_id(session, every_id)
    seen = await repository.seen_among(session, viewer_id, every_id)
    views = {
        int(view["id"]): StoryOut.model_validate(view)
        for view in await story_view_data(
            session,
            list(stories.values()),
            viewer_id,
            container.now(),
            container.media_urls,
            seen=seen,
            held=every_id,
        )
    }
    out = []
    for highlight in highlights:
        items = [
            views[s]
            for s in story_ids[highlight.id]
            # Another's processing or failed story is theirs alone to see, as a post's is.
            if s in views and (views[s].status == "ready" or highlight.owner_id == viewer_id)
        ]
        # The first story with something to show (one being published again has no URLs yet).
        cover: MediaOut | None = next((item.media for item in items if item.media.variants), None)
        out.append(
            HighlightOut(
                id=highlight.id,
                title=highlight.title,
                cover=cover,
                stories=items,
                created_at=highlight.created_at,
            )
        )
    return out
