"""Helpers for the social tests: users who follow, like and post, through the real API; and
ready posts made quickly (straight into the posts table, then through the same fan-out job a
processed upload gets) where a test needs many of them."""

from __future__ import annotations

from typing import Any

from glimpse.backends.queue.outbox import enqueue
from glimpse.db.base import utcnow
from glimpse.feed.names import FAN_OUT_JOB
from glimpse.posts.models import Post, PostStatus
from tests.conftest import Glimpse

Headers = dict[str, str]


async def user_id(glimpse: Glimpse, headers: Headers) -> int:
    return int((await glimpse.client.get("/api/v1/me", headers=headers)).json()["id"])


async def follow(glimpse: Glimpse, headers: Headers, username: str) -> str:
    response = await glimpse.client.post(f"/api/v1/users/{username}/follow", headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def unfollow(glimpse: Glimpse, headers: Headers, username: str) -> None:
    response = await glimpse.client.delete(f"/api/v1/users/{username}/follow", headers=headers)
    assert response.status_code == 204, response.text


async def block(glimpse: Glimpse, headers: Headers, username: str) -> None:
    response = await glimpse.client.post(f"/api/v1/users/{username}/block", headers=headers)
    assert response.status_code == 204, response.text


async def accept(glimpse: Glimpse, headers: Headers, username: str) -> None:
    response = await glimpse.client.post(
        f"/api/v1/me/follow-requests/{username}/accept", headers=headers
    )
    assert response.status_code == 204, response.text


async def go_private(glimpse: Glimpse, headers: Headers, private: bool = True) -> None:
    response = await glimpse.client.patch(
        "/api/v1/me", headers=headers, json={"is_private": private}
    )
    assert response.status_code == 200, response.text


async def profile(glimpse: Glimpse, headers: Headers, username: str) -> dict[str, Any]:
    response = await glimpse.client.get(f"/api/v1/users/{username}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def like(glimpse: Glimpse, headers: Headers, post_id: int | str) -> None:
    response = await glimpse.client.post(f"/api/v1/posts/{post_id}/like", headers=headers)
    assert response.status_code == 204, response.text


async def quick_post(glimpse: Glimpse, author_id: int, caption: str = "") -> int:
    """A ready post (without media) and its fan-out job, as processing would leave them."""
    container = glimpse.container
    post_id = container.ids.next_id()
    async with container.db.write() as session:
        session.add(
            Post(
                id=post_id,
                author_id=author_id,
                caption=caption,
                filter_name="normal",
                status=PostStatus.READY,
                like_count=0,
                comment_count=0,
                created_at=utcnow(),
            )
        )
        await session.flush()
        enqueue(session, container.ids, FAN_OUT_JOB, {"post_id": post_id}, max_attempts=5)
    return post_id


async def feed(
    glimpse: Glimpse,
    headers: Headers,
    order: str = "ranked",
    limit: int = 20,
    cursor: str | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"order": order, "limit": limit}
    if cursor:
        params["cursor"] = cursor
    response = await glimpse.client.get("/api/v1/feed", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def walk_feed(
    glimpse: Glimpse, headers: Headers, order: str = "ranked", limit: int = 20
) -> list[str]:
    """Every post id of the feed, page by page."""
    ids: list[str] = []
    cursor = None
    for _ in range(1000):
        page = await feed(glimpse, headers, order, limit, cursor)
        ids.extend(p["id"] for p in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("the walk never ended")


async def feed_ids(glimpse: Glimpse, headers: Headers, order: str = "latest") -> list[str]:
    return await walk_feed(glimpse, headers, order, limit=100)
