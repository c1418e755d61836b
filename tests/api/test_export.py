"""Data exports (issue 20 item 5): the zip holds what the account made (originals byte for byte,
captions, alt text, dates, comments, likes, followers and following); the download URL is
signed, expires, and serves its owner only; one export runs at a time; a week later the reaper
deletes it from the store."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from glimpse.privacy import archive as archive_module
from glimpse.privacy import repository as privacy_repository
from glimpse.privacy.archive import ExportWriter
from glimpse.privacy.jobs import purge_expired_exports
from tests.api.privacy_helpers import stored_keys
from tests.api.social import follow, like
from tests.api.test_stories import Clock, post_story
from tests.conftest import Glimpse, assert_error, jpeg_bytes

Headers = dict[str, str]
DAY = 86400


@pytest.fixture
def clock(glimpse: Glimpse) -> Clock:
    clock = Clock(1_900_000_000.0)
    glimpse.container.clock = clock
    return clock


async def start(glimpse: Glimpse, headers: Headers) -> dict[str, Any]:
    response = await glimpse.client.post("/api/v1/me/export", headers=headers)
    assert response.status_code == 202, response.text
    return dict(response.json())


async def ready(glimpse: Glimpse, headers: Headers) -> dict[str, Any]:
    started = await start(glimpse, headers)
    assert started["status"] == "pending" and started["url"] is None
    await glimpse.run_jobs()
    response = await glimpse.client.get(f"/api/v1/me/exports/{started['id']}", headers=headers)
    assert response.status_code == 200, response.text
    body = dict(response.json())
    assert body["status"] == "ready" and body["url"], body
    return body


async def download(glimpse: Glimpse, headers: Headers, url: str) -> zipfile.ZipFile:
    response = await glimpse.client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert "attachment" in response.headers["content-disposition"]
    return zipfile.ZipFile(io.BytesIO(response.content))


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return f"{parts.path}?{urlencode(query)}"


async def test_the_zip_holds_originals_and_everything_the_account_made(glimpse: Glimpse) -> None:
    alice, bob, carol = [await glimpse.signup(n) for n in ("alice", "bob", "carol")]
    photos = [jpeg_bytes((320, 240), (200, 10, 10)), jpeg_bytes((240, 320), (10, 200, 10))]
    response = await glimpse.upload(
        alice,
        files=[("a.jpg", photos[0]), ("b.jpg", photos[1])],
        caption="Two at the lake ☀",
        alt_text=["a red square", "a green one"],
    )
    assert response.status_code == 202
    post_id = response.json()["id"]
    story_photo = jpeg_bytes((900, 1600), (1, 2, 3))
    story = await post_story(glimpse, alice, story_photo)
    other_story = await post_story(glimpse, alice)
    for title, ids in (("Lake", [other_story["id"], story["id"]]), ("Solo", [story["id"]])):
        response = await glimpse.client.post(
            "/api/v1/me/highlights", headers=alice, json={"title": title, "story_ids": ids}
        )
        assert response.status_code == 201, response.text
    await follow(glimpse, alice, "bob")
    await follow(glimpse, carol, "alice")
    bobs = await glimpse.upload(bob, files=[("c.jpg", jpeg_bytes())])
    await glimpse.run_jobs()
    await like(glimpse, alice, bobs.json()["id"])
    comment = await glimpse.client.post(
        f"/api/v1/posts/{bobs.json()['id']}/comments", headers=alice, json={"text": "lovely"}
    )
    assert comment.status_code == 201

    body = await ready(glimpse, alice)
    archive = await download(glimpse, alice, body["url"])
    names = set(archive.namelist())
    assert {"README.txt", "account.json", "posts.json", "stories.json", "comments.json"} <= names
    assert {"likes.json", "followers.json", "following.json"} <= names
    (post,) = json.loads(archive.read("posts.json"))
    assert post["id"] == post_id and post["caption"] == "Two at the lake ☀"
    assert post["created_at"].endswith("Z")
    assert [m["alt_text"] for m in post["media"]] == ["a red square", "a green one"]
    for media, original in zip(post["media"], photos, strict=True):
        assert archive.read(media["file"]) == original  # the original, byte for byte
    story_item, _ = json.loads(archive.read("stories.json"))
    assert story_item["id"] == story["id"] and story_item["expires_at"]
    assert archive.read(story_item["media"][0]["file"]) == story_photo
    assert json.loads(archive.read("account.json"))["username"] == "alice"
    highlights = json.loads(archive.read("highlights.json"))
    assert [(h["title"], h["story_ids"]) for h in highlights] == [
        ("Lake", [other_story["id"], story["id"]]),
        ("Solo", [story["id"]]),
    ]
    comments = json.loads(archive.read("comments.json"))
    assert [(c["post_id"], c["text"]) for c in comments] == [(bobs.json()["id"], "lovely")]
    assert [x["post_id"] for x in json.loads(archive.read("likes.json"))] == [bobs.json()["id"]]
    assert [x["username"] for x in json.loads(archive.read("followers.json"))] == ["carol"]
    assert [x["username"] for x in json.loads(archive.read("following.json"))] == ["bob"]
    # Nothing of anyone else's.
    assert sum(n.startswith("posts/") for n in names) == 2


async def test_every_batch_is_read_when_lists_outgrow_one_query(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One row a query: each list is read in several batches, each from past the last key.
    monkeypatch.setattr(archive_module, "READ_BATCH", 1)
    alice, bob, carol = [await glimpse.signup(n) for n in ("alice", "bob", "carol")]
    posts = [
        (await glimpse.upload(alice, files=[("p.jpg", jpeg_bytes())], caption=f"p{i}")).json()["id"]
        for i in range(3)
    ]
    stories = [(await post_story(glimpse, alice))["id"] for _ in range(2)]
    for title in ("One", "Two"):
        response = await glimpse.client.post(
            "/api/v1/me/highlights", headers=alice, json={"title": title, "story_ids": stories}
        )
        assert response.status_code == 201, response.text
    await follow(glimpse, alice, "bob")
    await follow(glimpse, alice, "carol")
    await follow(glimpse, bob, "alice")
    await follow(glimpse, carol, "alice")
    theirs = [
        (await glimpse.upload(u, files=[("t.jpg", jpeg_bytes())])).json()["id"]
        for u in (bob, carol)
    ]
    await glimpse.run_jobs()
    for post_id in theirs:
        await like(glimpse, alice, post_id)
    for text in ("one", "two", "three"):
        response = await glimpse.client.post(
            f"/api/v1/posts/{theirs[0]}/comments", headers=alice, json={"text": text}
        )
        assert response.status_code == 201

    archive = await download(glimpse, alice, (await ready(glimpse, alice))["url"])

    def read(name: str) -> list[dict[str, Any]]:
        return list(json.loads(archive.read(name)))

    assert [p["id"] for p in read("posts.json")] == sorted(posts, key=int)
    assert [s["id"] for s in read("stories.json")] == sorted(stories, key=int)
    assert [(h["title"], h["story_ids"]) for h in read("highlights.json")] == [
        ("One", stories),
        ("Two", stories),
    ]
    assert [c["text"] for c in read("comments.json")] == ["one", "two", "three"]
    assert sorted(x["post_id"] for x in read("likes.json")) == sorted(theirs)
    assert [x["username"] for x in read("followers.json")] == ["bob", "carol"]
    assert [x["username"] for x in read("following.json")] == ["bob", "carol"]


async def test_one_export_runs_at_a_time(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    assert_error(await glimpse.client.get("/api/v1/me/export", headers=alice), 404)
    first, second = await start(glimpse, alice), await start(glimpse, alice)
    assert second["id"] == first["id"]
    await glimpse.run_jobs()
    third = await start(glimpse, alice)  # the first is done: a new one may start
    assert third["id"] != first["id"]
    latest = await glimpse.client.get("/api/v1/me/export", headers=alice)
    assert latest.json()["id"] == third["id"] and latest.json()["status"] == "pending"


@pytest.mark.parametrize("settings", [{"rate_limits": "exports=2/day"}], indirect=True)
async def test_starting_exports_is_throttled(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    for _ in range(2):
        await start(glimpse, alice)
        await glimpse.run_jobs()
    response = await glimpse.client.post("/api/v1/me/export", headers=alice)
    assert_error(response, 429, "throttled")
    assert int(response.headers["Retry-After"]) > 0


async def test_the_url_is_for_its_owner_signed_and_good_for_a_day(
    glimpse: Glimpse, clock: Clock
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    body = await ready(glimpse, alice)
    url = body["url"]
    expires = int(parse_qs(urlsplit(url).query)["exp"][0])
    assert expires == int(clock.now) + DAY
    # Another account: neither the export nor its file, even with the URL.
    assert_error(await glimpse.client.get(f"/api/v1/me/exports/{body['id']}", headers=bob), 404)
    assert_error(await glimpse.client.get(url, headers=bob), 404, "export_not_found")
    assert_error(await glimpse.client.get(url), 401)
    # Forged: another signature, another expiry under the same signature.
    assert_error(await glimpse.client.get(with_query(url, sig="A" * 22), headers=alice), 404)
    later = with_query(url, exp=str(expires + DAY))
    assert_error(await glimpse.client.get(later, headers=alice), 404)
    assert_error(await glimpse.client.get(with_query(url, exp="١٢"), headers=alice), 404)
    await download(glimpse, alice, url)
    clock.now = expires - 1
    await download(glimpse, alice, url)
    clock.now = expires
    assert_error(await glimpse.client.get(url, headers=alice), 404)
    # A new look at the export gives a new URL, good for another day.
    fresh = await glimpse.client.get(f"/api/v1/me/exports/{body['id']}", headers=alice)
    await download(glimpse, alice, fresh.json()["url"])


async def test_exports_are_reaped_after_a_week(glimpse: Glimpse, clock: Clock) -> None:
    alice = await glimpse.signup("alice")
    await glimpse.upload(alice)
    body = await ready(glimpse, alice)
    async with glimpse.container.db.read() as s:
        (export,) = await privacy_repository.exports_of(s, int((await me(glimpse, alice))["id"]))
    assert export.key is not None
    assert await glimpse.container.storage.size(export.key)
    clock.now += 7 * DAY - 60
    await purge_expired_exports(glimpse.container, {})
    assert await glimpse.container.storage.size(export.key)  # not yet
    clock.now += 60
    await purge_expired_exports(glimpse.container, {})
    assert await glimpse.container.storage.size(export.key) is None
    assert_error(await glimpse.client.get(f"/api/v1/me/exports/{body['id']}", headers=alice), 404)
    assert_error(await glimpse.client.get(body["url"], headers=alice), 404)
    async with glimpse.container.db.read() as s:
        assert await privacy_repository.get_export(s, int(body["id"])) is None


async def me(glimpse: Glimpse, headers: Headers) -> dict[str, Any]:
    return dict((await glimpse.client.get("/api/v1/me", headers=headers)).json())


async def test_unknown_and_malformed_export_ids_are_404_or_422(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    assert_error(await glimpse.client.get("/api/v1/me/exports/12345", headers=alice), 404)
    assert_error(await glimpse.client.get("/api/v1/me/exports/nope", headers=alice), 422)
    assert_error(
        await glimpse.client.get("/api/v1/me/exports/1/download?exp=1&sig=x", headers=alice), 404
    )
    assert_error(await glimpse.client.get("/api/v1/me/exports/1/download", headers=alice), 422)


async def test_an_export_that_keeps_failing_is_failed_with_a_reason_and_another_may_start(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await glimpse.signup("alice")

    async def breaks(self: ExportWriter, exported_at: object) -> None:
        raise RuntimeError("the disk said no")

    monkeypatch.setattr(ExportWriter, "write", breaks)
    started = await start(glimpse, alice)
    await glimpse.run_jobs()  # every attempt fails; the job is buried
    body = (await glimpse.client.get(f"/api/v1/me/exports/{started['id']}", headers=alice)).json()
    assert body["status"] == "failed" and body["url"] is None
    assert body["error"]["code"] == "processing_failed" and body["available_until"]
    assert not [k for k in stored_keys(glimpse) if k.startswith("exports/")]
    monkeypatch.undo()
    again = await start(glimpse, alice)
    assert again["id"] != started["id"]
    await glimpse.run_jobs()
    response = await glimpse.client.get(f"/api/v1/me/exports/{again['id']}", headers=alice)
    assert response.json()["status"] == "ready"
