"""HTTP routes of posts: upload, show, delete, the profile grid, and the filter list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from glimpse.api.deps import Caller, ContainerDep, EntityId, PageLimit
from glimpse.api.errors import error_responses, links
from glimpse.api.uploads import receive_upload
from glimpse.media.filters import FILTERS, preview_recipe
from glimpse.pagination import check_limit, decode_keyset, encode_keyset
from glimpse.posts import service
from glimpse.posts.schemas import FilterList, FilterOut, PostOut, PostPage
from glimpse.posts.uploading import create_post_from_upload
from glimpse.posts.views import PostRow, post_views

# 429: every /api/ request counts against a budget (api/throttling.py).
router = APIRouter(prefix="/api/v1", tags=["posts"], responses=error_responses(401, 422, 429, 503))

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "minItems": 1,
                            "maxItems": 20,
                        },
                        "caption": {"type": "string", "maxLength": 2200},
                        "filter": {"type": "string", "enum": list(FILTERS)},
                        "alt_text": {"type": "array", "items": {"type": "string"}},
                    },
                }
            }
        },
    }
}


@router.post(
    "/posts",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PostOut,
    openapi_extra=_UPLOAD_BODY,
    responses={
        **error_responses(400, 413, 415),
        **links(
            202,
            GetPost=("get", "/api/v1/posts/{post_id}", {"post_id": "$response.body#/id"}),
            DeletePost=("delete", "/api/v1/posts/{post_id}", {"post_id": "$response.body#/id"}),
        ),
    },
)
async def create_post(request: Request, caller: Caller, container: ContainerDep) -> PostOut:
    """Upload 1..20 photos as one post. Answers at once with `status: processing`; the photos
    are resized and filtered in the background and the post becomes `ready` (or `failed`)."""
    form = await receive_upload(request, container, caller.user.id)
    return await create_post_from_upload(container, caller.user.id, form)


@router.get("/posts/{post_id}", response_model=PostOut, responses=error_responses(404))
async def get_post(post_id: EntityId, caller: Caller, container: ContainerDep) -> PostOut:
    """One post. Its author also sees it while it is processing or after it failed."""
    async with container.db.read() as session:
        post = await service.get_visible_post(session, post_id, caller.user.id)
    views = await post_views(
        container.db,
        [PostRow.of(post)],
        caller.user.id,
        container.media_urls,
        container.post_summaries,
    )
    return views[0]


@router.delete(
    "/posts/{post_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(403, 404),
)
async def delete_post(post_id: EntityId, caller: Caller, container: ContainerDep) -> Response:
    """Delete one of the caller's posts and its stored media (but not media another post uses)."""
    async with container.db.write() as session:
        await service.delete_post(
            session, container.ids, container.settings, post_id, caller.user.id
        )
    # (Never shown again anyway: every read checks the post is there. This frees the memory.)
    await container.post_summaries.forget([post_id])
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/users/{username}/posts", response_model=PostPage, responses=error_responses(400, 403, 404)
)
async def list_user_posts(
    username: str,
    caller: Caller,
    container: ContainerDep,
    limit: PageLimit = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> PostPage:
    """A user's ready posts, newest first (the profile grid)."""
    page_size = check_limit(limit)
    before = decode_keyset(container.secret_key, "user_posts", cursor, username)
    async with container.db.read(replica=True) as session:
        posts, more = await service.list_profile_posts(
            session, username, caller.user.id, before, page_size
        )
    items = await post_views(
        container.db,
        [PostRow.of(p) for p in posts],
        caller.user.id,
        container.media_urls,
        container.post_summaries,
    )
    next_cursor = (
        encode_keyset(container.secret_key, "user_posts", posts[-1].id, username) if more else None
    )
    return PostPage(items=items, next_cursor=next_cursor)


@router.get("/filters", response_model=FilterList)
async def list_filters(caller: Caller) -> FilterList:
    """The filters an upload may name."""
    return FilterList(
        items=[
            FilterOut.model_validate(
                {"name": f.name, "label": f.label, "preview": preview_recipe(f.name)}
            )
            for f in FILTERS.values()
        ]
    )
