"""HTTP route of the home feed."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.routing import APIRoute

from glimpse.api.deps import Caller, ContainerDep, PageLimit, get_caller_id
from glimpse.api.errors import error_responses
from glimpse.container import Container
from glimpse.errors import Malformed
from glimpse.feed import kept_pages, service
from glimpse.feed.cursors import FeedPosition, Order, from_cursor_fields, to_cursor_fields
from glimpse.feed.repository import Counts
from glimpse.pagination import check_limit, decode_cursor, encode_cursor
from glimpse.posts.avif import avif_wanted
from glimpse.posts.schemas import PostPage
from glimpse.posts.views import lacks_avif, post_view_data

_KIND = "feed"
_ORDERS: frozenset[str] = frozenset({"ranked", "latest"})
# A page size that FastAPI's int parsing reads exactly as int() does; anything else (signs,
# spaces, other digits, absurd lengths) takes the declared route, and gets its answer.
_PLAIN_LIMIT = re.compile(r"[0-9]{1,9}")

RouteHandler = Callable[[Request], Coroutine[Any, Any, Response]]


class _FeedRoute(APIRoute):
    """The feed route as declared (its parameters, their checks and its OpenAPI text), with a
    short way in for the requests nearly all clients send: each parameter at most once and
    plainly well formed. Those skip FastAPI's dependency solving and parameter validation (a
    fifth of a warm page's CPU, bench/bench_feed.py) and reach the same authentication and the
    same page as the declared route; any other request goes the declared way, so what is refused
    is refused with the same answer."""

    def get_route_handler(self) -> RouteHandler:
        declared = super().get_route_handler()

        async def handler(request: Request) -> Response:
            params = _plain_params(request)
            if params is None:
                return await declared(request)
            container: Container = request.app.state.container
            # Read once, before every look it guards: the token's, the large accounts
            # followed and the kept page's. (Read by each of them instead, it cost a kept
            # page 4-11 us more: bench/bench_version_once.py.)
            version = container.db.version()
            viewer_id = await get_caller_id(request, container, version)
            return await _feed_page(container, viewer_id, *params, version=version)

        return handler


router = APIRouter(
    prefix="/api/v1",
    tags=["feed"],
    responses=error_responses(401, 422, 429, 503),
    route_class=_FeedRoute,
)


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
    return await _feed_page(container, caller.user.id, limit, cursor, order)


def _plain_params(request: Request) -> tuple[int | None, str | None, Order] | None:
    """(limit, cursor, order) as the declared route would receive them, or None when the
    query is anything but plain (a parameter twice, a limit that is not a plain number, an
    unknown order)."""
    query = request.query_params
    values: dict[str, str] = {}
    for name in ("limit", "cursor", "order"):
        given = query.getlist(name)
        if len(given) > 1:
            return None
        if given:
            values[name] = given[0]
    limit_text = values.get("limit")
    if limit_text is not None and _PLAIN_LIMIT.fullmatch(limit_text) is None:
        return None
    order = values.get("order", "ranked")
    if order not in _ORDERS:
        return None
    limit = int(limit_text) if limit_text is not None else None
    return limit, values.get("cursor"), "latest" if order == "latest" else "ranked"


async def _feed_page(
    container: Container,
    viewer_id: int,
    limit: int | None,
    cursor: str | None,
    order: Order,
    version: tuple[int, int] | None = None,
) -> Response:
    # Serialised here, once, from plain values: a model would be validated on the way in and,
    # returned, dumped and validated again against response_model (most of this route's cost).
    # orjson writes the 34 KB of a first page in a sixth of json.dumps's time.
    if cursor or not container.kept_pages.enabled:
        page = await feed_page_data(container, viewer_id, limit, cursor, order)
        return Response(orjson.dumps(page), media_type="application/json")
    page_size = check_limit(limit)

    async def build() -> kept_pages.Built:
        page, counts = await _page_data(container, viewer_id, page_size, None, order)
        authors = {int(item["author"]["id"]) for item in page["items"]}
        if avif_wanted(container.settings) and any(
            lacks_avif(item["media"]) for item in page["items"]
        ):
            # Its AVIF copies are being made: no mark tells when a process's summary of the
            # post learns of them (backends/summaries), so it is built again, not renewed.
            counts = None
        return kept_pages.Built(orjson.dumps(page), authors, counts)

    if version is None:
        version = container.db.version()
    pulled = await service.pulled_accounts(container, viewer_id, version)
    body = await kept_pages.first_page(
        container, viewer_id, order, page_size, pulled, build, version
    )
    return Response(body, media_type="application/json")


async def feed_page_data(
    container: Container, viewer_id: int, limit: int | None, cursor: str | None, order: Order
) -> dict[str, Any]:
    """A page of the feed as API.md's plain JSON values (`items`, `next_cursor`); the web app's
    home page renders the same."""
    return (await _page_data(container, viewer_id, limit, cursor, order))[0]


async def _page_data(
    container: Container, viewer_id: int, limit: int | None, cursor: str | None, order: Order
) -> tuple[dict[str, Any], dict[int, Counts] | None]:
    """feed_page_data, and the counts its posts were chosen by (service.FeedPage.counts)."""
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
    page = await service.read_feed(container, viewer_id, position, order, page_size)
    items = await post_view_data(
        container.db, page.posts, viewer_id, container.media_urls, container.post_summaries
    )
    next_cursor = (
        encode_cursor(container.secret_key, _KIND, to_cursor_fields(page.next_position))
        if page.next_position is not None
        else None
    )
    return {"items": items, "next_cursor": next_cursor}, page.counts
