"""HTTP routes of likes and comments."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from glimpse.api.deps import Caller, ContainerDep, EntityId, PageLimit
from glimpse.api.errors import error_responses
from glimpse.api.throttling import count_against
from glimpse.engagement import service
from glimpse.engagement.schemas import CommentCreate, CommentOut, CommentPage
from glimpse.errors import Malformed
from glimpse.pagination import check_limit, decode_cursor, encode_cursor
from glimpse.throttling import COMMENTS

# 429: every /api/ request counts against a budget (api/throttling.py).
router = APIRouter(prefix="/api/v1", tags=["posts"], responses=error_responses(401, 422, 429, 503))


@router.post(
    "/posts/{post_id}/like",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404, 409),
)
async def like_post(post_id: EntityId, caller: Caller, container: ContainerDep) -> Response:
    """Like a post. Idempotent."""
    async with container.db.write() as session:
        await service.like(session, post_id, caller.user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/posts/{post_id}/like",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
)
async def unlike_post(post_id: EntityId, caller: Caller, container: ContainerDep) -> Response:
    """Take a like back. Idempotent."""
    async with container.db.write() as session:
        await service.unlike(session, post_id, caller.user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/posts/{post_id}/comments",
    status_code=status.HTTP_201_CREATED,
    response_model=CommentOut,
    responses=error_responses(400, 404, 409, 413),
)
async def add_comment(
    post_id: EntityId,
    body: CommentCreate,
    request: Request,
    caller: Caller,
    container: ContainerDep,
) -> CommentOut:
    """Comment on a post (1 to 2,200 characters)."""
    await count_against(
        request,
        container.throttle,
        COMMENTS,
        "account",
        str(caller.user.id),
        message="Too many comments; please try again later.",
    )
    async with container.db.write() as session:
        return await service.add_comment(
            session, container.ids, container.settings, post_id, caller.user, body.text
        )


@router.get(
    "/posts/{post_id}/comments", response_model=CommentPage, responses=error_responses(400, 404)
)
async def list_comments(
    post_id: EntityId,
    caller: Caller,
    container: ContainerDep,
    limit: PageLimit = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> CommentPage:
    """A post's comments, oldest first."""
    page_size = check_limit(limit)
    after = None
    if cursor:
        position = decode_cursor(container.secret_key, "comments", cursor)
        after = position.get("after")
        # A cursor is for one post's comments: another post's is refused, not misapplied.
        if not isinstance(after, int) or isinstance(after, bool) or position.get("post") != post_id:
            raise Malformed("The cursor is not one this server issued.", code="invalid_cursor")
    async with container.db.read() as session:
        items, next_key = await service.list_comments(
            session, post_id, caller.user.id, after, page_size
        )
    return CommentPage(
        items=items,
        next_cursor=encode_cursor(
            container.secret_key, "comments", {"after": next_key, "post": post_id}
        )
        if next_key is not None
        else None,
    )


@router.delete(
    "/posts/{post_id}/comments/{comment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(403, 404),
)
async def delete_comment(
    post_id: EntityId, comment_id: EntityId, caller: Caller, container: ContainerDep
) -> Response:
    """Delete a comment: its author may, and so may the post's author."""
    async with container.db.write() as session:
        await service.delete_comment(session, post_id, comment_id, caller.user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
