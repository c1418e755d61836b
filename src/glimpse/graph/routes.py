"""HTTP routes of the social graph: follow, unfollow, follow requests, blocks, and the lists of
followers and following."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import User
from glimpse.accounts.schemas import UserOut, UserPage
from glimpse.api.deps import Caller, ContainerDep, PageLimit
from glimpse.api.errors import error_responses
from glimpse.api.throttling import count_against
from glimpse.graph import repository
from glimpse.graph import service as graph
from glimpse.graph.schemas import FollowOut
from glimpse.pagination import check_limit, decode_keyset, encode_keyset
from glimpse.throttling import FOLLOWS

# 429: every /api/ request counts against a budget (api/throttling.py).
router = APIRouter(
    prefix="/api/v1", tags=["social graph"], responses=error_responses(401, 422, 429, 503)
)

Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]


async def _user_page(
    session: AsyncSession,
    viewer_id: int,
    users: list[User],
    next_key: int | None,
    secret: bytes,
    kind: str,
    of: str,
) -> UserPage:
    statuses = await repository.follow_statuses(session, viewer_id, [u.id for u in users])
    return UserPage(
        items=[UserOut.of(u, statuses[u.id]) for u in users],
        next_cursor=encode_keyset(secret, kind, next_key, of) if next_key is not None else None,
    )


@router.post(
    "/users/{username}/follow", response_model=FollowOut, responses=error_responses(403, 404)
)
async def follow(
    username: str, request: Request, caller: Caller, container: ContainerDep
) -> FollowOut:
    """Follow an account: `following` at once for a public one, `pending` for a private one
    until its owner accepts. Idempotent."""
    await count_against(
        request,
        container.throttle,
        FOLLOWS,
        "account",
        str(caller.user.id),
        message="Too many follows; please try again later.",
    )
    async with container.db.write() as session:
        outcome = await graph.follow(
            session, container.ids, container.settings, caller.user.id, username
        )
    return FollowOut(status=outcome)


@router.delete(
    "/users/{username}/follow",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
)
async def unfollow(username: str, caller: Caller, container: ContainerDep) -> Response:
    """Stop following an account, or withdraw a pending request. Idempotent."""
    async with container.db.write() as session:
        await graph.unfollow(session, container.ids, container.settings, caller.user.id, username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _list(
    container: ContainerDep,
    caller: Caller,
    username: str,
    limit: int | None,
    cursor: str | None,
    kind: str,
) -> UserPage:
    page_size = check_limit(limit)
    before = decode_keyset(container.secret_key, kind, cursor, username)
    lister = graph.list_followers if kind == "followers" else graph.list_following
    async with container.db.read(replica=True) as session:
        users, next_key = await lister(session, username, caller.user.id, before, page_size)
        return await _user_page(
            session, caller.user.id, users, next_key, container.secret_key, kind, username
        )


@router.get(
    "/users/{username}/followers", response_model=UserPage, responses=error_responses(400, 403, 404)
)
async def list_followers(
    username: str,
    caller: Caller,
    container: ContainerDep,
    limit: PageLimit = None,
    cursor: Cursor = None,
) -> UserPage:
    """Who follows this account, newest first. 403 for a private account the caller does not
    follow."""
    return await _list(container, caller, username, limit, cursor, "followers")


@router.get(
    "/users/{username}/following", response_model=UserPage, responses=error_responses(400, 403, 404)
)
async def list_following(
    username: str,
    caller: Caller,
    container: ContainerDep,
    limit: PageLimit = None,
    cursor: Cursor = None,
) -> UserPage:
    """Whom this account follows, newest first. 403 for a private account the caller does not
    follow."""
    return await _list(container, caller, username, limit, cursor, "following")


@router.get("/me/follow-requests", response_model=UserPage, responses=error_responses(400))
async def list_follow_requests(
    caller: Caller, container: ContainerDep, limit: PageLimit = None, cursor: Cursor = None
) -> UserPage:
    """Who asked to follow the caller (a private account), newest first."""
    page_size = check_limit(limit)
    before = decode_keyset(container.secret_key, "follow_requests", cursor)
    async with container.db.read() as session:
        users, next_key = await graph.list_follow_requests(
            session, caller.user.id, before, page_size
        )
        return await _user_page(
            session, caller.user.id, users, next_key, container.secret_key, "follow_requests", ""
        )


@router.post(
    "/me/follow-requests/{username}/accept",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
)
async def accept_follow_request(username: str, caller: Caller, container: ContainerDep) -> Response:
    """Let this user follow the caller's account."""
    async with container.db.write() as session:
        await graph.accept_request(
            session, container.ids, container.settings, caller.user.id, username
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/me/follow-requests/{username}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
)
async def deny_follow_request(username: str, caller: Caller, container: ContainerDep) -> Response:
    """Refuse this user's request to follow the caller. Idempotent."""
    async with container.db.write() as session:
        await graph.deny_request(session, caller.user.id, username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/users/{username}/block",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
)
async def block(username: str, caller: Caller, container: ContainerDep) -> Response:
    """Block an account: follows end both ways, and it gets 404 for the caller's profile,
    posts and stories. Idempotent."""
    async with container.db.write() as session:
        await graph.block(session, container.ids, container.settings, caller.user.id, username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/users/{username}/block",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
)
async def unblock(username: str, caller: Caller, container: ContainerDep) -> Response:
    """Lift a block. Idempotent."""
    async with container.db.write() as session:
        await graph.unblock(session, caller.user.id, username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
