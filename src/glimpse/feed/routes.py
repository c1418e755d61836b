"""HTTP route of the home feed."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from glimpse.api.deps import Caller, ContainerDep, PageLimit
from glimpse.api.errors import error_responses
from glimpse.errors import Malformed
from glimpse.feed import service
from glimpse.feed.cursors import FeedPosition, from_cursor_fields, to_cursor_fields
from glimpse.pagination import check_limit, decode_cursor, encode_cursor
from glimpse.posts.schemas import PostPage
from glimpse.posts.views import post_view_data

router = APIRouter(prefix="/api/v1", tags=["feed"], responses=error_responses(401, 422, 429, 503))
_KIND = "feed"


@router.get("/feed", response_model=PostPage, responses=error_responses(400))
async def read_feed(
    caller: Caller,
    container: ContainerDep,
    limit: PageLimit = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    order: Annotated[
        Literal["ranked", "latest"],
        Query(description="`ranked` by engagement and recency, or `latest` first"),
    ] = "ranked",
) -> Response:
    """Posts of the accounts the caller follows, and the caller's own. A walk page by page
    never repeats a post and never skips one, however the ranking changes meanwhile."""
    page_size = check_limit(limit)
    position: FeedPosition | None = None
    if cursor:
        try:
            position = from_cursor_fields(decode_cursor(container.secret_key, _KIND, cursor))
        except ValueError:
            position = None
        if position is None or position.order != order:
            raise Malformed(
                "The cursor is not one this server issued for this order.", code="invalid_cursor"
            )
    page = await service.read_feed(container, caller.user.id, position, order, page_size)
    items = await post_view_data(
        container.db, page.posts, caller.user.id, container.media_urls, container.media_views
    )
    next_cursor = (
        encode_cursor(container.secret_key, _KIND, to_cursor_fields(page.next_position))
        if page.next_position is not None
        else None
    )
    # Serialised here, once, from plain values: a model would be validated on the way in and,
    # returned, dumped and validated again against response_model (most of this route's cost).
    body = json.dumps({"items": items, "next_cursor": next_cursor}, separators=(",", ":"))
    return Response(body, media_type="application/json")
