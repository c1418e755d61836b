"""A like, an unlike and a comment check the post in one statement (posts.visible_post_status,
graph.visibility's SQL form): what that statement must still decide that get_visible_post did.
Its author alone sees a post that is not ready, and may neither like nor comment on it (409
post_not_ready, for a comment as for a like, and for a failed post as for one processing); a
like and a comment keep the post's row from deletion on PostgreSQL (FOR KEY SHARE OF posts,
which SQLite drops: so the statement itself is looked at here, in PostgreSQL's form)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import ORMExecuteState, Session

from glimpse.db.base import utcnow
from glimpse.posts.models import Post, PostStatus
from tests.api.social import quick_post, user_id
from tests.conftest import Glimpse, assert_error


async def _failed_post(glimpse: Glimpse, author_id: int) -> int:
    """A post whose processing failed, as the worker leaves it."""
    post_id = glimpse.container.ids.next_id()
    async with glimpse.container.db.write() as session:
        session.add(
            Post(
                id=post_id,
                author_id=author_id,
                caption="",
                filter_name="normal",
                status=PostStatus.FAILED,
                like_count=0,
                comment_count=0,
                created_at=utcnow(),
            )
        )
    return post_id


async def _counts(glimpse: Glimpse, post_id: int | str) -> tuple[int, int]:
    async with glimpse.container.db.read() as session:
        post = await session.get(Post, int(post_id))
        assert post is not None
        return post.like_count, post.comment_count


async def test_a_post_still_processing_takes_no_comment_from_its_author(glimpse: Glimpse) -> None:
    # The one statement answers the author with the post's status: a comment checks it as a
    # like does, and nothing is written.
    alice = await glimpse.signup("alice")
    post = (await glimpse.upload(alice)).json()
    response = await glimpse.client.post(
        f"/api/v1/posts/{post['id']}/comments", headers=alice, json={"text": "soon"}
    )
    assert_error(response, 409, "post_not_ready")
    assert await _counts(glimpse, post["id"]) == (0, 0)


async def test_a_failed_post_takes_no_like_and_no_comment(glimpse: Glimpse) -> None:
    # Not ready is not only processing: a failed post is shown to its author alone, and
    # takes nothing either.
    alice = await glimpse.signup("alice")
    post_id = await _failed_post(glimpse, await user_id(glimpse, alice))
    liked = await glimpse.client.post(f"/api/v1/posts/{post_id}/like", headers=alice)
    assert_error(liked, 409, "post_not_ready")
    commented = await glimpse.client.post(
        f"/api/v1/posts/{post_id}/comments", headers=alice, json={"text": "hm"}
    )
    assert_error(commented, 409, "post_not_ready")
    assert await _counts(glimpse, post_id) == (0, 0)
    # Anyone else is told there is no such post.
    bob = await glimpse.signup("bob")
    for method, path, body in [
        ("POST", f"/api/v1/posts/{post_id}/like", None),
        ("DELETE", f"/api/v1/posts/{post_id}/like", None),
        ("POST", f"/api/v1/posts/{post_id}/comments", {"text": "hi"}),
        ("GET", f"/api/v1/posts/{post_id}/comments", None),
    ]:
        response = await glimpse.client.request(method, path, headers=bob, json=body)
        assert_error(response, 404, "post_not_found")


async def test_a_like_and_a_comment_keep_the_post_row_for_key_share(
    glimpse: Glimpse,
) -> None:
    # On PostgreSQL a deletion committed between the check and the insert of the like would
    # leave the insert facing a foreign key to nothing (tests/integration/test_write_races.py
    # runs that race there). Here, on SQLite, the check's statement is compiled as PostgreSQL
    # would receive it.
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    post_id = await quick_post(glimpse, await user_id(glimpse, alice))
    checks: list[str] = []

    def seen(state: ORMExecuteState) -> None:
        if not state.is_select:
            return
        statement: Any = state.statement
        sql = str(statement.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
        if sql.startswith("SELECT posts.status") and "FROM posts" in sql:
            checks.append(" ".join(sql.split()))

    event.listen(Session, "do_orm_execute", seen)
    try:
        liked = await glimpse.client.post(f"/api/v1/posts/{post_id}/like", headers=bob)
        assert liked.status_code == 204, liked.text
        like_checks = list(checks)
        checks.clear()
        commented = await glimpse.client.post(
            f"/api/v1/posts/{post_id}/comments", headers=bob, json={"text": "nice"}
        )
        assert commented.status_code == 201, commented.text
        comment_checks = list(checks)
    finally:
        event.remove(Session, "do_orm_execute", seen)
    for found in (like_checks, comment_checks):
        assert len(found) == 1, found  # one statement decides
        assert found[0].endswith("FOR KEY SHARE OF posts"), found[0]
    assert await _counts(glimpse, post_id) == (1, 1)
