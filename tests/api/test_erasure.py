"""Erasing an account (DELETE /api/v1/me, issue 20 item 4), on the embedded stack and the
scale stack: the store and the cache are listed before and after, every table is searched for the
account's id, the counters of the others are checked, and a run that dies midway is finished by
the next without losing or leaving anything."""

from __future__ import annotations

from typing import Any

import pytest

from glimpse.posts import routes as posts_routes
from glimpse.privacy import erasure
from glimpse.privacy import repository as privacy_repository
from glimpse.privacy import routes as privacy_routes
from glimpse.privacy.jobs import purge_expired_exports
from glimpse.stories import routes as stories_routes
from tests.api.privacy_helpers import cached_feeds, keys_of, rows_naming, stored_keys
from tests.api.social import block, feed, follow, like, profile, user_id
from tests.api.test_posts import publish
from tests.api.test_stories import post_story
from tests.conftest import Glimpse, assert_error, jpeg_bytes

Headers = dict[str, str]
PASSWORD = "correct horse"


async def erase(glimpse: Glimpse, headers: Headers, password: str = PASSWORD) -> Any:
    return await glimpse.client.request(
        "DELETE", "/api/v1/me", headers=headers, json={"password": password}
    )


async def world(glimpse: Glimpse) -> dict[str, Any]:
    """alice, who is to be erased, with something of every kind; bob, carol and dave around her."""
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    carol, dave = await glimpse.signup("carol"), await glimpse.signup("dave")
    await follow(glimpse, alice, "bob")
    await follow(glimpse, bob, "alice")
    await follow(glimpse, carol, "alice")
    await block(glimpse, alice, "dave")
    same = jpeg_bytes((320, 240), (10, 120, 200))
    # bob's post has the very bytes of alice's first: its variants are shared (content-addressed).
    first = await _publish_bytes(glimpse, alice, same, caption="first")
    second = await publish(glimpse, alice, size=(300, 400), caption="second")
    bobs = await _publish_bytes(glimpse, bob, same, caption="bob's")
    story = await post_story(glimpse, alice)
    response = await glimpse.client.post(
        "/api/v1/me/highlights", headers=alice, json={"title": "Hi", "story_ids": [story["id"]]}
    )
    assert response.status_code == 201, response.text
    bob_story = await post_story(glimpse, bob)
    response = await glimpse.client.post(f"/api/v1/stories/{bob_story['id']}/view", headers=alice)
    assert response.status_code == 204
    await like(glimpse, alice, bobs["id"])
    await like(glimpse, bob, first["id"])
    for who, post in ((alice, bobs), (bob, first)):
        response = await glimpse.client.post(
            f"/api/v1/posts/{post['id']}/comments", headers=who, json={"text": "nice"}
        )
        assert response.status_code == 201, response.text
    export = await glimpse.client.post("/api/v1/me/export", headers=alice)
    assert export.status_code == 202
    # Feeds are built and read, so the cache holds alice's posts.
    for who in (alice, bob, carol):
        await feed(glimpse, who)
    await glimpse.run_jobs()
    return {
        "alice": alice, "bob": bob, "carol": carol, "dave": dave,
        "alice_id": await user_id(glimpse, alice), "bob_id": await user_id(glimpse, bob),
        "carol_id": await user_id(glimpse, carol),
        "posts": [first["id"], second["id"]], "bobs": bobs["id"], "story": story["id"],
    }  # fmt: skip


async def _publish_bytes(glimpse: Glimpse, headers: Headers, data: bytes, caption: str) -> Any:
    response = await glimpse.upload(headers, files=[("p.jpg", data)], caption=caption)
    assert response.status_code == 202, response.text
    await glimpse.run_jobs()
    return response.json()


# A batch of one makes every loop of the job go round more than once (alice has two posts, two
# followers): a loop that stopped after its first batch would leave rows behind.
@pytest.mark.parametrize(
    "settings", [{}, {"erasure_batch_size": 1}], indirect=True, ids=["one-batch", "batch-of-1"]
)
async def test_erasure_deletes_every_row_file_and_cache_entry_and_keeps_others_counts(
    glimpse: Glimpse,
) -> None:
    w = await world(glimpse)
    alice_id, bob_id = w["alice_id"], w["bob_id"]
    alices_keys, bobs_keys = await keys_of(glimpse, alice_id), await keys_of(glimpse, bob_id)
    before = stored_keys(glimpse)
    async with glimpse.container.db.read() as s:
        exports = await privacy_repository.exports_of(s, alice_id)
    assert [e.status for e in exports] == ["ready"] and exports[0].key in before
    assert alices_keys <= before and any(k.startswith("originals/") for k in alices_keys)
    assert alices_keys & bobs_keys  # the shared variants
    feeds = await cached_feeds(glimpse)
    assert any(author == alice_id for entries in feeds.values() for _, author in entries)
    assert alice_id in feeds
    bob_before = await profile(glimpse, w["bob"], "bob")
    assert (bob_before["follower_count"], bob_before["following_count"]) == (1, 1)

    response = await erase(glimpse, w["alice"])
    assert response.status_code == 202, response.text
    # At once, before any job: the token is dead, the profile gone, the name taken.
    assert_error(await glimpse.client.get("/api/v1/me", headers=w["alice"]), 401)
    assert_error(await glimpse.client.get("/api/v1/users/alice", headers=w["bob"]), 404)
    signin = await glimpse.client.post(
        "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
    )
    assert_error(signin, 401, "invalid_credentials")
    again = await glimpse.client.post(
        "/api/v1/accounts", json={"username": "alice", "password": PASSWORD}
    )
    assert_error(again, 409, "username_taken")
    # Her posts and stories too, for her followers, before the job has deleted any.
    for post_id in (*w["posts"], w["story"]):
        assert_error(await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=w["bob"]), 404)
    for who in (w["bob"], w["carol"]):
        assert not {p["id"] for p in (await feed(glimpse, who))["items"]} & set(w["posts"])

    await glimpse.run_jobs()

    after = stored_keys(glimpse)
    assert after == before - (alices_keys - bobs_keys) - {exports[0].key}
    assert bobs_keys <= after  # what bob's post shares with alice's is his still
    assert not any(k.startswith(f"exports/{alice_id}/") for k in after)
    feeds = await cached_feeds(glimpse)
    assert alice_id not in feeds
    assert not any(author == alice_id for entries in feeds.values() for _, author in entries)
    assert await rows_naming(glimpse, alice_id) == {}
    bob_after = await profile(glimpse, w["bob"], "bob")
    assert (bob_after["follower_count"], bob_after["following_count"]) == (0, 0)
    bobs_post = (await glimpse.client.get(f"/api/v1/posts/{w['bobs']}", headers=w["bob"])).json()
    assert (bobs_post["like_count"], bobs_post["comment_count"]) == (0, 0)
    carol = await profile(glimpse, w["carol"], "carol")
    assert carol["following_count"] == 0
    for post_id in w["posts"]:
        assert_error(await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=w["bob"]), 404)
    assert [p["id"] for p in (await feed(glimpse, w["bob"]))["items"]] == [w["bobs"]]
    # bob's post still serves its (shared) variants.
    for variant in bobs_post["media"][0]["variants"]:
        assert (await glimpse.client.get(variant["url"])).status_code == 200


async def test_a_wrong_password_is_told_what_a_wrong_sign_in_is_and_erases_nothing(
    glimpse: Glimpse,
) -> None:
    alice = await glimpse.signup("alice")
    wrong_signin = await glimpse.client.post(
        "/api/v1/auth/token", json={"username": "alice", "password": "not it at all"}
    )
    response = await erase(glimpse, alice, "not it at all")
    assert_error(response, 401, "invalid_credentials")
    assert response.json() == wrong_signin.json()
    assert (await glimpse.client.get("/api/v1/me", headers=alice)).status_code == 200
    assert_error(await glimpse.client.request("DELETE", "/api/v1/me", headers=alice), 422)
    too_big = await glimpse.client.request(
        "DELETE", "/api/v1/me", headers=alice, json={"password": "x" * 70_000}
    )
    assert_error(too_big, 413, "body_too_large")
    not_json = await glimpse.client.request(
        "DELETE", "/api/v1/me", headers={**alice, "Content-Type": "application/json"}, content=b"{"
    )
    assert 400 <= not_json.status_code < 500
    await glimpse.run_jobs()
    assert (await glimpse.client.get("/api/v1/me", headers=alice)).status_code == 200


@pytest.mark.parametrize("settings", [{"rate_limits": "signin_failures=2/minute"}], indirect=True)
async def test_wrong_passwords_spend_the_sign_in_budget(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    for _ in range(2):
        assert_error(await erase(glimpse, alice, "guess guess"), 401, "invalid_credentials")
    throttled = await erase(glimpse, alice, PASSWORD)  # even the right one, now
    assert_error(throttled, 429, "throttled")
    assert "Retry-After" in throttled.headers
    # ... and sign-ins are held back alike: it is one budget.
    signin = await glimpse.client.post(
        "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
    )
    assert_error(signin, 429)


@pytest.mark.parametrize("settings", [{"erasure_batch_size": 1}], indirect=True)
async def test_an_erasure_killed_midway_is_finished_by_the_next_run(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    await feed(glimpse, bob)
    posts = [await publish(glimpse, alice, size=(200 + i, 200)) for i in range(4)]
    await like(glimpse, bob, posts[0]["id"])
    alice_id = await user_id(glimpse, alice)
    alices_keys = await keys_of(glimpse, alice_id)
    before = stored_keys(glimpse)
    real = privacy_repository.delete_posts
    calls: list[int] = []
    midway: dict[str, Any] = {}

    async def dies_on_the_third_batch(session: Any, post_ids: Any) -> list[str]:
        calls.append(len(post_ids))
        if len(calls) == 3:
            midway["posts"] = len(await privacy_repository.post_batch(session, alice_id, 100))
            midway["files"] = stored_keys(glimpse)
            raise RuntimeError("the worker died here")
        return await real(session, post_ids)

    monkeypatch.setattr(privacy_repository, "delete_posts", dies_on_the_third_batch)
    assert (await erase(glimpse, alice)).status_code == 202
    await glimpse.run_jobs()  # the failed run, then its retry

    assert 0 < midway["posts"] < len(posts)  # it really died halfway through
    assert alices_keys & midway["files"]
    assert await rows_naming(glimpse, alice_id) == {}
    assert stored_keys(glimpse) == before - alices_keys
    assert not any(a == alice_id for e in (await cached_feeds(glimpse)).values() for _, a in e)
    async with glimpse.container.db.read() as s:
        done = await privacy_repository.get_erasure(s, alice_id)
    assert done is not None and done.finished_at is not None
    # Run once more (a duplicate delivery): nothing changes, nothing fails.
    await erasure.erase_account(glimpse.container, alice_id)


@pytest.mark.parametrize("settings", [{"erased_username_hold_days": 0}], indirect=True)
async def test_the_username_is_free_again_once_the_hold_has_passed(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    alice_id = await user_id(glimpse, alice)
    assert (await erase(glimpse, alice)).status_code == 202
    await glimpse.run_jobs()
    async with glimpse.container.db.read() as s:
        erased = await privacy_repository.get_erasure(s, alice_id)
    assert erased is not None and erased.username == "alice" and erased.finished_at is not None
    await purge_expired_exports(glimpse.container, {})  # forgets the finished erasure
    async with glimpse.container.db.read() as s:
        assert not await privacy_repository.username_held(s, "alice", glimpse.container.now())
        assert await privacy_repository.get_erasure(s, alice_id) is None  # the name is forgotten
    await glimpse.signup("alice")  # a new account; nothing of the old one
    assert (await profile(glimpse, await glimpse.signup("bob"), "alice"))["post_count"] == 0


@pytest.mark.parametrize("route", ["posts", "stories"])
@pytest.mark.parametrize("finished", [False, True], ids=["erasure-asked", "erasure-done"])
async def test_an_upload_whose_account_is_erased_while_it_arrives_is_refused_and_leaves_nothing(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch, route: str, finished: bool
) -> None:
    # The token was good when the upload began; its body took long enough for the account to
    # be erased meanwhile. It used to end in a 500 (the post's row naming a user row that was
    # gone), or in a post inserted for an account being erased.
    alice = await glimpse.signup("alice")
    alice_id = await user_id(glimpse, alice)
    before = stored_keys(glimpse)
    module = posts_routes if route == "posts" else stories_routes
    real = module.receive_upload

    async def erased_while_the_body_arrived(*args: Any, **kwargs: Any) -> Any:
        form = await real(*args, **kwargs)
        assert await erasure.request_erasure(glimpse.container, alice_id)
        if finished:
            await glimpse.run_jobs()
        return form

    monkeypatch.setattr(module, "receive_upload", erased_while_the_body_arrived)
    files = [("file", ("p.jpg", jpeg_bytes((400, 300)), "image/jpeg"))]
    response = await glimpse.client.post(f"/api/v1/{route}", headers=alice, files=files)
    assert_error(response, 401, "invalid_token")
    await glimpse.run_jobs()
    assert await rows_naming(glimpse, alice_id) == {}
    assert stored_keys(glimpse) == before  # its original is not left in the store


async def test_an_export_asked_for_as_the_account_is_erased_is_refused_and_leaves_nothing(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Authenticated just before the erasure was asked for, the export's row used to be written
    # after it: left pending for good (no expiry, so never reaped) or, made once the erasure
    # had deleted the account's exports, a zip left in the store.
    alice = await glimpse.signup("alice")
    alice_id = await user_id(glimpse, alice)
    await publish(glimpse, alice, size=(300, 200))
    before = stored_keys(glimpse)
    real = privacy_routes.count_against

    async def erased_meanwhile(*args: Any, **kwargs: Any) -> None:
        await real(*args, **kwargs)
        assert await erasure.request_erasure(glimpse.container, alice_id)

    monkeypatch.setattr(privacy_routes, "count_against", erased_meanwhile)
    assert_error(
        await glimpse.client.post("/api/v1/me/export", headers=alice), 401, "invalid_token"
    )
    await glimpse.run_jobs()
    assert await rows_naming(glimpse, alice_id) == {}
    after = stored_keys(glimpse)
    assert not any(k.startswith(f"exports/{alice_id}/") for k in after)
    assert after < before  # (her post's files are gone too)
