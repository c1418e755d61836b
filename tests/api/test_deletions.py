"""Deleting a post, a story or a comment takes its files (originals included) out of the store
and its entries out of the cached feeds: the store and the cache are listed before and after, on
the embedded stack and the scale stack (S3, Redis)."""

from __future__ import annotations

from tests.api.privacy_helpers import cached_feeds, keys_of, stored_keys
from tests.api.social import feed, follow, user_id
from tests.api.test_posts import publish
from tests.api.test_stories import post_story
from tests.conftest import Glimpse, assert_error, jpeg_bytes

Headers = dict[str, str]


async def test_a_deleted_post_leaves_the_store_and_every_cached_feed(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    await feed(glimpse, bob)
    kept = await publish(glimpse, alice, size=(320, 240))
    doomed = await publish(glimpse, alice, size=(240, 320))
    alice_id = await user_id(glimpse, alice)
    before_keys, before = await keys_of(glimpse, alice_id), stored_keys(glimpse)
    cached = {p for entries in (await cached_feeds(glimpse)).values() for p, _ in entries}
    assert {int(kept["id"]), int(doomed["id"])} <= cached

    response = await glimpse.client.delete(f"/api/v1/posts/{doomed['id']}", headers=alice)
    assert response.status_code == 204
    await glimpse.run_jobs()

    gone = before_keys - await keys_of(glimpse, alice_id)
    assert any(k.startswith("originals/") for k in gone) and any(k.startswith("v/") for k in gone)
    assert stored_keys(glimpse) == before - gone
    cached = {p for entries in (await cached_feeds(glimpse)).values() for p, _ in entries}
    assert int(doomed["id"]) not in cached and int(kept["id"]) in cached


async def test_a_deleted_story_leaves_the_store_its_highlights_and_its_views(
    glimpse: Glimpse,
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    alice_id = await user_id(glimpse, alice)
    kept = await post_story(glimpse, alice)
    doomed = await post_story(glimpse, alice, jpeg_bytes((900, 1600), (5, 90, 5)))
    for story_ids in ([doomed["id"]], [kept["id"], doomed["id"]]):
        response = await glimpse.client.post(
            "/api/v1/me/highlights", headers=alice, json={"title": "h", "story_ids": story_ids}
        )
        assert response.status_code == 201, response.text
    seen = await glimpse.client.post(f"/api/v1/stories/{doomed['id']}/view", headers=bob)
    assert seen.status_code == 204
    before_keys, before = await keys_of(glimpse, alice_id), stored_keys(glimpse)

    # Someone who may see it may not delete it; a missing one is a 404.
    assert_error(
        await glimpse.client.delete(f"/api/v1/stories/{doomed['id']}", headers=bob),
        403,
        "not_author",
    )
    assert_error(await glimpse.client.delete("/api/v1/stories/42", headers=alice), 404)
    response = await glimpse.client.delete(f"/api/v1/stories/{doomed['id']}", headers=alice)
    assert response.status_code == 204
    await glimpse.run_jobs()

    gone = before_keys - await keys_of(glimpse, alice_id)
    assert any(k.startswith("originals/") for k in gone) and any(k.startswith("v/") for k in gone)
    assert stored_keys(glimpse) == before - gone
    assert_error(await glimpse.client.get(f"/api/v1/stories/{doomed['id']}", headers=alice), 404)
    highlights = (await glimpse.client.get("/api/v1/users/alice/highlights", headers=bob)).json()
    # The highlight that held only it is gone; the other keeps its other story.
    assert [[s["id"] for s in h["stories"]] for h in highlights["items"]] == [[kept["id"]]]
    archive = (await glimpse.client.get("/api/v1/me/stories/archive", headers=alice)).json()
    assert [s["id"] for s in archive["items"]] == [kept["id"]]
    assert_error(await glimpse.client.delete(f"/api/v1/stories/{doomed['id']}", headers=alice), 404)


async def test_a_comment_is_deleted_by_its_author_or_the_posts_and_counted_off(
    glimpse: Glimpse,
) -> None:
    alice, bob, carol = (
        await glimpse.signup("alice"), await glimpse.signup("bob"), await glimpse.signup("carol")
    )  # fmt: skip
    post = await publish(glimpse, alice)
    comments = []
    for who in (bob, bob):
        response = await glimpse.client.post(
            f"/api/v1/posts/{post['id']}/comments", headers=who, json={"text": "hi"}
        )
        assert response.status_code == 201
        comments.append(response.json()["id"])
    base = f"/api/v1/posts/{post['id']}/comments"
    assert_error(await glimpse.client.delete(f"{base}/{comments[0]}", headers=carol), 403)
    assert (await glimpse.client.delete(f"{base}/{comments[0]}", headers=bob)).status_code == 204
    assert (await glimpse.client.delete(f"{base}/{comments[1]}", headers=alice)).status_code == 204
    assert_error(await glimpse.client.delete(f"{base}/{comments[1]}", headers=alice), 404)
    assert_error(await glimpse.client.delete(f"{base}/123", headers=alice), 404)
    after = (await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=alice)).json()
    assert after["comment_count"] == 0
    assert (await glimpse.client.get(base, headers=alice)).json()["items"] == []
