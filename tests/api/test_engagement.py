"""Likes and comments through the real app: idempotent likes with exact counts under
concurrency, liked_by_me, comments and their pagination, and the text rules (API.md, "Posts")."""

from __future__ import annotations

import asyncio

import pytest

from tests.api.social import block, go_private, like, quick_post, user_id
from tests.api.test_posts import publish
from tests.conftest import Glimpse, assert_error


async def shown(glimpse: Glimpse, headers: dict[str, str], post_id: int | str) -> dict[str, object]:
    response = await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_like_and_unlike_are_idempotent_and_counted_once(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    post_id = await quick_post(glimpse, await user_id(glimpse, alice))
    for _ in range(3):
        await like(glimpse, bob, post_id)
    seen = await shown(glimpse, bob, post_id)
    assert (seen["like_count"], seen["liked_by_me"]) == (1, True)
    seen = await shown(glimpse, alice, post_id)
    assert (seen["like_count"], seen["liked_by_me"]) == (1, False)
    for _ in range(3):
        response = await glimpse.client.delete(f"/api/v1/posts/{post_id}/like", headers=bob)
        assert response.status_code == 204
    seen = await shown(glimpse, bob, post_id)
    assert (seen["like_count"], seen["liked_by_me"]) == (0, False)


@pytest.mark.parametrize("settings", [{"database_busy_timeout_ms": 30000}], indirect=True)
async def test_like_counts_stay_exact_under_concurrent_requests(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    fans = [await glimpse.signup(f"fan{i}") for i in range(8)]
    post_id = await quick_post(glimpse, await user_id(glimpse, alice))

    async def tap(headers: dict[str, str]) -> None:
        # Each fan double-taps at once (a like and a like), unlikes twice at once, likes again.
        await asyncio.gather(like(glimpse, headers, post_id), like(glimpse, headers, post_id))
        await asyncio.gather(
            *(glimpse.client.delete(f"/api/v1/posts/{post_id}/like", headers=headers) for _ in "ab")
        )
        await like(glimpse, headers, post_id)

    await asyncio.gather(*(tap(fan) for fan in fans))
    assert (await shown(glimpse, alice, post_id))["like_count"] == 8


async def test_likes_of_a_profile_grid_show_whose_they_are(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    aid = await user_id(glimpse, alice)
    liked, unliked = await quick_post(glimpse, aid), await quick_post(glimpse, aid)
    await like(glimpse, bob, liked)
    grid = (await glimpse.client.get("/api/v1/users/alice/posts", headers=bob)).json()["items"]
    assert {p["id"]: p["liked_by_me"] for p in grid} == {str(liked): True, str(unliked): False}


async def test_nobody_likes_or_comments_what_they_may_not_see(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    post_id = await quick_post(glimpse, await user_id(glimpse, alice))
    await go_private(glimpse, alice)
    for method, path, body in [
        ("POST", f"/api/v1/posts/{post_id}/like", None),
        ("DELETE", f"/api/v1/posts/{post_id}/like", None),
        ("POST", f"/api/v1/posts/{post_id}/comments", {"text": "hi"}),
        ("GET", f"/api/v1/posts/{post_id}/comments", None),
        ("POST", "/api/v1/posts/12345/like", None),
        ("GET", "/api/v1/posts/12345/comments", None),
    ]:
        response = await glimpse.client.request(method, path, headers=bob, json=body)
        assert_error(response, 404, "post_not_found")
    assert (await shown(glimpse, alice, post_id))["like_count"] == 0
    assert (await shown(glimpse, alice, post_id))["comment_count"] == 0


async def test_a_post_still_processing_takes_no_likes(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    post = (await glimpse.upload(alice)).json()
    response = await glimpse.client.post(f"/api/v1/posts/{post['id']}/like", headers=alice)
    assert_error(response, 409, "post_not_ready")


async def test_comments_are_listed_oldest_first_page_by_page(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    post = await publish(glimpse, alice)
    texts = [f"comment {i}" for i in range(11)]
    for i, text in enumerate(texts):
        response = await glimpse.client.post(
            f"/api/v1/posts/{post['id']}/comments",
            headers=alice if i % 2 else bob,
            json={"text": text},
        )
        assert response.status_code == 201, response.text
        comment = response.json()
        assert set(comment) == {"id", "author", "text", "created_at"}
        assert comment["text"] == text and isinstance(comment["id"], str)
        assert comment["author"]["username"] == ("alice" if i % 2 else "bob")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = await glimpse.client.get(
            f"/api/v1/posts/{post['id']}/comments", headers=bob, params=params
        )
        assert page.status_code == 200, page.text
        seen += [c["text"] for c in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == texts
    assert (await shown(glimpse, bob, post["id"]))["comment_count"] == 11


async def test_a_comment_cursor_is_for_its_own_post(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    aid = await user_id(glimpse, alice)
    first, second = await quick_post(glimpse, aid), await quick_post(glimpse, aid)
    for _ in range(3):
        await glimpse.client.post(
            f"/api/v1/posts/{first}/comments", headers=alice, json={"text": "x"}
        )
    page = await glimpse.client.get(
        f"/api/v1/posts/{first}/comments", headers=alice, params={"limit": 1}
    )
    cursor = page.json()["next_cursor"]
    for post_id, bad in [(second, cursor), (first, cursor[:-1] + "~"), (first, "garbage")]:
        response = await glimpse.client.get(
            f"/api/v1/posts/{post_id}/comments", headers=alice, params={"cursor": bad}
        )
        assert_error(response, 400, "invalid_cursor")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"text": ""}, 422, "empty_comment"),
        ({"text": "   \n "}, 422, "empty_comment"),
        ({"text": "x" * 2201}, 422, "comment_too_long"),
        ({"text": "evil \u202e txt"}, 422, "invalid_text"),
        ({"text": "zero\u200bwidth"}, 422, "invalid_text"),
        ({"text": "bell\x07"}, 422, "invalid_text"),
        ({"text": 5}, 422, None),
        ({}, 422, None),
        ({"text": "ok", "extra": 1}, 422, None),
    ],
)
async def test_comment_text_follows_the_text_rules(
    glimpse: Glimpse, body: dict[str, object], status: int, code: str | None
) -> None:
    alice = await glimpse.signup("alice")
    post_id = await quick_post(glimpse, await user_id(glimpse, alice))
    response = await glimpse.client.post(
        f"/api/v1/posts/{post_id}/comments", headers=alice, json=body
    )
    assert_error(response, status, code)
    assert (await shown(glimpse, alice, post_id))["comment_count"] == 0


async def test_a_comment_of_the_longest_length_and_with_emoji_is_kept_whole(
    glimpse: Glimpse,
) -> None:
    alice = await glimpse.signup("alice")
    post_id = await quick_post(glimpse, await user_id(glimpse, alice))
    for text in ["y" * 2200, "family \U0001f468\u200d\U0001f469\u200d\U0001f467 and\nnew line"]:
        response = await glimpse.client.post(
            f"/api/v1/posts/{post_id}/comments", headers=alice, json={"text": text}
        )
        assert response.status_code == 201, response.text
        assert response.json()["text"] == text


async def test_comments_of_blocked_accounts_are_not_shown(glimpse: Glimpse) -> None:
    alice, bob, troll = (
        await glimpse.signup("alice"),
        await glimpse.signup("bob"),
        await glimpse.signup("troll"),
    )
    post_id = await quick_post(glimpse, await user_id(glimpse, alice))
    for who, text in [(bob, "nice"), (troll, "rude")]:
        await glimpse.client.post(
            f"/api/v1/posts/{post_id}/comments", headers=who, json={"text": text}
        )
    await block(glimpse, bob, "troll")
    listed = await glimpse.client.get(f"/api/v1/posts/{post_id}/comments", headers=bob)
    assert [c["text"] for c in listed.json()["items"]] == ["nice"]
    listed = await glimpse.client.get(f"/api/v1/posts/{post_id}/comments", headers=alice)
    assert [c["text"] for c in listed.json()["items"]] == ["nice", "rude"]


async def test_deleting_a_post_deletes_its_likes_and_comments(glimpse: Glimpse) -> None:
    from sqlalchemy import text

    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    post_id = await quick_post(glimpse, await user_id(glimpse, alice))
    await like(glimpse, bob, post_id)
    await glimpse.client.post(f"/api/v1/posts/{post_id}/comments", headers=bob, json={"text": "x"})
    assert (
        await glimpse.client.delete(f"/api/v1/posts/{post_id}", headers=alice)
    ).status_code == 204
    async with glimpse.container.db.read() as s:
        for table in ("likes", "comments"):
            count = (await s.execute(text(f"select count(*) from {table}"))).scalar_one()
            assert count == 0, table


async def test_comments_of_an_account_that_blocks_the_viewer_are_not_shown(
    glimpse: Glimpse,
) -> None:
    alice, bob, hider = (
        await glimpse.signup("alice"),
        await glimpse.signup("bob"),
        await glimpse.signup("hider"),
    )
    post_id = await quick_post(glimpse, await user_id(glimpse, alice))
    for who, text in [(bob, "hello"), (hider, "quiet")]:
        await glimpse.client.post(
            f"/api/v1/posts/{post_id}/comments", headers=who, json={"text": text}
        )
    await block(glimpse, hider, "bob")  # the comment's author blocks the viewer
    listed = await glimpse.client.get(f"/api/v1/posts/{post_id}/comments", headers=bob)
    assert [c["text"] for c in listed.json()["items"]] == ["hello"]
