"""HTTP routes of stories: upload, the tray, an account's stories, views and viewers, the
archive, and highlights."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response, status

from glimpse.accounts.schemas import UserSummary
from glimpse.api.deps import Caller, ContainerDep, EntityId, PageLimit
from glimpse.api.errors import error_responses, links
from glimpse.api.uploads import receive_upload
from glimpse.container import Container
from glimpse.pagination import check_limit, decode_keyset, encode_keyset
from glimpse.posts.views import rfc3339
from glimpse.stories import repository, service
from glimpse.stories.schemas import (
    HighlightCreate,
    HighlightList,
    HighlightOut,
    StoryList,
    StoryOut,
    StoryPage,
    Tray,
    ViewerOut,
    ViewerPage,
)
from glimpse.stories.uploading import create_story_from_upload
from glimpse.stories.views import highlight_views, story_view_data

# 429: every /api/ request counts against a budget (api/throttling.py).
router = APIRouter(
    prefix="/api/v1", tags=["stories"], responses=error_responses(401, 422, 429, 503)
)

_CURSOR = Annotated[str | None, Query(description="next_cursor of the previous page")]
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "alt_text": {"type": "string"},
                    },
                }
            }
        },
    }
}


@router.post(
    "/stories",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=StoryOut,
    openapi_extra=_UPLOAD_BODY,
    responses={
        **error_responses(400, 413, 415),
        **links(
            202,
            GetStory=("get", "/api/v1/stories/{story_id}", {"story_id": "$response.body#/id"}),
        ),
    },
)
async def create_story(request: Request, caller: Caller, container: ContainerDep) -> StoryOut:
    """Share one photo as a story, for GLIMPSE_STORY_TTL_SECONDS (a day by default). Answers at
    once with `status: processing`; it is processed as a post's photo is, with a full-screen
    1080x1920 variant besides the smaller ones."""
    form = await receive_upload(request, container, caller.user.id, max_files=1)
    form.fields.pop("caption", None)  # (a story has none)
    return await create_story_from_upload(container, caller.user.id, form)


@router.get("/stories/tray", response_model=Tray)
async def read_tray(caller: Caller, container: ContainerDep) -> Response:
    """The accounts the caller follows that have live stories: those with a story the caller
    has not seen first, then by their latest story; each account's stories oldest first."""
    items = await tray_data(container, caller.user.id)
    # Serialised once, from plain values (as the feed is): hundreds of stories, each with ten
    # signed URLs, would cost several times more as models validated on the way out.
    return Response(orjson.dumps({"items": items}), media_type="application/json")


async def tray_data(container: Container, viewer_id: int) -> list[dict[str, Any]]:
    """The tray's entries as API.md's plain JSON values; the web app's home page shows the same."""
    now = container.now()
    entries, seen = await service.tray(container.db, viewer_id, now)
    stories = [story for entry in entries for story in entry.stories]
    views = await story_view_data(
        container.db, stories, viewer_id, now, container.media_urls, seen=seen
    )
    by_id = {story.id: view for story, view in zip(stories, views, strict=True)}
    return [
        {
            "user": by_id[entry.stories[0].id]["author"],
            "has_unseen": entry.has_unseen,
            "latest_at": rfc3339(entry.latest_at),
            "stories": [by_id[story.id] for story in entry.stories],
        }
        for entry in entries
    ]


@router.get(
    "/users/{username}/stories", response_model=StoryList, responses=error_responses(403, 404)
)
async def list_user_stories(username: str, caller: Caller, container: ContainerDep) -> StoryList:
    """An account's live stories, oldest first; as visible as its posts."""
    now = container.now()
    async with container.db.read() as session:
        stories = await service.user_stories(session, username, caller.user.id, now)
        seen = await repository.seen_among(session, caller.user.id, [s.id for s in stories])
        items = await story_view_data(
            session, stories, caller.user.id, now, container.media_urls, seen=seen
        )
    return StoryList.model_validate({"items": items})


@router.get("/stories/{story_id}", response_model=StoryOut, responses=error_responses(404))
async def get_story(story_id: EntityId, caller: Caller, container: ContainerDep) -> StoryOut:
    """One live story; 404 from the second it expires."""
    now = container.now()
    async with container.db.read() as session:
        story = await service.get_story(session, story_id, caller.user.id, now)
        seen = await repository.seen_among(session, caller.user.id, [story.id])
        [view] = await story_view_data(
            session, [story], caller.user.id, now, container.media_urls, seen=seen
        )
    return StoryOut.model_validate(view)


@router.post(
    "/stories/{story_id}/view",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
)
async def view_story(story_id: EntityId, caller: Caller, container: ContainerDep) -> Response:
    """Mark a live story as seen by the caller. Idempotent."""
    async with container.db.write() as session:
        await service.view_story(session, container.ids, story_id, caller.user.id, container.now())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/stories/{story_id}/viewers",
    response_model=ViewerPage,
    responses=error_responses(400, 403, 404),
)
async def list_viewers(
    story_id: EntityId,
    caller: Caller,
    container: ContainerDep,
    limit: PageLimit = None,
    cursor: _CURSOR = None,
) -> ViewerPage:
    """Who viewed one of the caller's stories, the latest first (its author only)."""
    page_size = check_limit(limit)
    before = decode_keyset(container.secret_key, "story_viewers", cursor, str(story_id))
    async with container.db.read() as session:
        rows, more = await service.list_viewers(
            session, story_id, caller.user.id, before, page_size, container.now()
        )
    return ViewerPage(
        items=[
            ViewerOut(
                user=UserSummary(
                    id=user.id, username=user.username, display_name=user.display_name
                ),
                viewed_at=at,
            )
            for _, user, at in rows
        ],
        next_cursor=encode_keyset(container.secret_key, "story_viewers", rows[-1][0], str(story_id))
        if more
        else None,
    )


@router.get("/me/stories/archive", response_model=StoryPage, responses=error_responses(400))
async def read_archive(
    caller: Caller, container: ContainerDep, limit: PageLimit = None, cursor: _CURSOR = None
) -> StoryPage:
    """The caller's own stories, expired ones included, newest first. An expired story keeps
    its media URLs only while a highlight holds it."""
    page_size = check_limit(limit)
    me = str(caller.user.id)
    before = decode_keyset(container.secret_key, "story_archive", cursor, me)
    now = container.now()
    async with container.db.read() as session:
        stories, more = await service.archive(session, caller.user.id, before, page_size)
        held = await repository.held(session, [s.id for s in stories])
        items = await story_view_data(
            session, stories, caller.user.id, now, container.media_urls, held=held
        )
    return StoryPage(
        items=[StoryOut.model_validate(item) for item in items],
        next_cursor=encode_keyset(container.secret_key, "story_archive", stories[-1].id, me)
        if more
        else None,
    )


@router.post(
    "/me/highlights",
    status_code=status.HTTP_201_CREATED,
    response_model=HighlightOut,
    responses={
        **error_responses(400, 404, 409, 413),
        **links(
            201,
            GetHighlight=(
                "get",
                "/api/v1/highlights/{highlight_id}",
                {"highlight_id": "$response.body#/id"},
            ),
        ),
    },
)
async def create_highlight(
    body: HighlightCreate, caller: Caller, container: ContainerDep
) -> HighlightOut:
    """Keep 1..100 of the caller's own stories, live or expired, on their profile under a
    title. Expired stories whose media was taken down are published again."""
    story_ids = service.parse_story_ids(body.story_ids)
    async with container.db.write() as session:
        highlight = await service.create_highlight(
            session,
            container.ids,
            container.settings,
            caller.user.id,
            body.title,
            story_ids,
            container.now(),
        )
        [view] = await highlight_views(session, container, [highlight], caller.user.id)
    return view


@router.get(
    "/users/{username}/highlights",
    response_model=HighlightList,
    responses=error_responses(403, 404),
)
async def list_user_highlights(
    username: str, caller: Caller, container: ContainerDep
) -> HighlightList:
    """An account's highlights, newest first; as visible as its posts."""
    async with container.db.read() as session:
        highlights = await service.user_highlights(session, username, caller.user.id)
        items = await highlight_views(session, container, highlights, caller.user.id)
    return HighlightList(items=items)


@router.get(
    "/highlights/{highlight_id}", response_model=HighlightOut, responses=error_responses(404)
)
async def get_highlight(
    highlight_id: EntityId, caller: Caller, container: ContainerDep
) -> HighlightOut:
    """One highlight; 404 unless the caller may see its owner's posts."""
    async with container.db.read() as session:
        highlight = await service.visible_highlight(session, highlight_id, caller.user.id)
        [view] = await highlight_views(session, container, [highlight], caller.user.id)
    return view


@router.delete(
    "/highlights/{highlight_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(403, 404),
)
async def delete_highlight(
    highlight_id: EntityId, caller: Caller, container: ContainerDep
) -> Response:
    """Delete one of the caller's highlights (its stories stay in the archive)."""
    async with container.db.write() as session:
        await service.delete_highlight(session, highlight_id, caller.user.id, container.now())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/stories/{story_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(403, 404),
)
async def delete_story(story_id: EntityId, caller: Caller, container: ContainerDep) -> Response:
    """Delete one of the caller's stories, live or archived, with its views, its places in
    highlights and (after a grace period) its files."""
    async with container.db.write() as session:
        await service.delete_story(
            session, container.ids, container.settings, story_id, caller.user.id, container.now()
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
