"""Posts through the real app: the Post shape, processing into variants, visibility, deletion,
the profile grid and its pagination, and the filter list (API.md, "Posts" and "Pagination")."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import text

from tests.conftest import Glimpse, assert_error, jpeg_bytes

POST_FIELDS = {
    "id",
    "author",
    "caption",
    "status",
    "created_at",
    "like_count",
    "comment_count",
    "liked_by_me",
    "media",
}
MEDIA_FIELDS = {"kind", "width", "height", "blurhash", "alt_text", "variants"}
VARIANT_FIELDS = {"name", "width", "height", "content_type", "url"}
PILLOW_FORMATS = {"image/jpeg": "JPEG", "image/webp": "WEBP"}


async def publish(
    glimpse: Glimpse, headers: dict[str, str], size: tuple[int, int] = (320, 240), **fields: Any
) -> dict[str, Any]:
    """Upload one small photo and process it; the post as its author then sees it."""
    response = await glimpse.upload(headers, files=[("p.jpg", jpeg_bytes(size))], **fields)
    assert response.status_code == 202, response.text
    await glimpse.run_jobs()
    post = await glimpse.client.get(f"/api/v1/posts/{response.json()['id']}", headers=headers)
    assert post.json()["status"] == "ready", post.text
    return dict(post.json())


async def post_count(glimpse: Glimpse, headers: dict[str, str]) -> int:
    return int((await glimpse.client.get("/api/v1/me", headers=headers)).json()["post_count"])


async def count_rows(glimpse: Glimpse, table: str) -> int:
    async with glimpse.container.db.read() as s:
        return int((await s.execute(text(f"select count(*) from {table}"))).scalar_one())


# --- the Post -------------------------------------------------------------------------------


async def test_upload_answers_202_with_a_processing_post_of_every_field(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    me = (await glimpse.client.get("/api/v1/me", headers=headers)).json()
    before = datetime.now(UTC)
    response = await glimpse.upload(headers, caption="first light", filter="clarendon")
    assert response.status_code == 202, response.text
    post = response.json()
    assert set(post) >= POST_FIELDS
    assert isinstance(post["id"], str) and post["id"].isdigit()
    assert post["author"] == {"id": me["id"], "username": "alice", "display_name": "alice"}
    assert post["caption"] == "first light"
    assert post["status"] == "processing"
    assert "error" not in post  # API.md: `error?`, only on failed posts
    assert post["created_at"].endswith(("Z", "+00:00")), post["created_at"]
    created = datetime.fromisoformat(post["created_at"].replace("Z", "+00:00"))
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0
    assert abs((created - before).total_seconds()) < 60
    assert (post["like_count"], post["comment_count"], post["liked_by_me"]) == (0, 0, False)
    assert len(post["media"]) == 1
    media = post["media"][0]
    assert set(media) >= MEDIA_FIELDS
    assert media["kind"] == "image"
    assert media["alt_text"] == ""
    # The same post is what GET shows its author.
    again = await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=headers)
    assert again.status_code == 200
    assert {k: again.json()[k] for k in POST_FIELDS} == {k: post[k] for k in POST_FIELDS}


async def test_processed_post_has_eight_variants_that_are_what_they_claim(
    glimpse: Glimpse,
) -> None:
    headers = await glimpse.signup("alice")
    response = await glimpse.upload(headers, files=[("big.jpg", jpeg_bytes((1200, 900)))])
    assert response.status_code == 202
    assert await glimpse.run_jobs() == 2  # the photo, then the post's fan-out
    post = (
        await glimpse.client.get(f"/api/v1/posts/{response.json()['id']}", headers=headers)
    ).json()
    assert post["status"] == "ready"
    media = post["media"][0]
    assert (media["width"], media["height"]) == (1200, 900)
    assert isinstance(media["blurhash"], str) and len(media["blurhash"]) >= 6
    variants = media["variants"]
    assert all(set(v) >= VARIANT_FIELDS for v in variants)
    assert sorted((v["name"], v["content_type"]) for v in variants) == sorted(
        (name, ct)
        for name in ("w1080", "w640", "w320", "sq150")
        for ct in ("image/jpeg", "image/webp")
    )
    expected_sizes = {
        "w1080": (1080, 810),
        "w640": (640, 480),
        "w320": (320, 240),
        "sq150": (150, 150),
    }
    for v in variants:
        assert (v["width"], v["height"]) == expected_sizes[v["name"]], v
        served = await glimpse.client.get(v["url"])
        assert served.status_code == 200, v["url"]
        assert served.headers["content-type"] == v["content_type"]
        with Image.open(io.BytesIO(served.content)) as im:
            assert im.format == PILLOW_FORMATS[v["content_type"]], v
            assert im.size == (v["width"], v["height"]), v
            im.load()


async def test_small_photo_is_never_upscaled(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    post = await publish(glimpse, headers, size=(300, 200))
    sizes = {v["name"]: (v["width"], v["height"]) for v in post["media"][0]["variants"]}
    assert sizes == {
        "w1080": (300, 200),
        "w640": (300, 200),
        "w320": (300, 200),
        "sq150": (150, 150),
    }


async def test_multiple_files_keep_their_order_and_alt_text(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    files = [
        ("one.jpg", jpeg_bytes((300, 200))),
        ("two.jpg", jpeg_bytes((240, 300))),
        ("three.jpg", jpeg_bytes((250, 250))),
    ]
    response = await glimpse.upload(headers, files=files, alt_text=["a red barn", "a tall tree"])
    assert response.status_code == 202, response.text
    assert [m["alt_text"] for m in response.json()["media"]] == ["a red barn", "a tall tree", ""]
    assert await glimpse.run_jobs() == 3 + 1  # the photos, then the post's fan-out
    post = (
        await glimpse.client.get(f"/api/v1/posts/{response.json()['id']}", headers=headers)
    ).json()
    assert post["status"] == "ready"
    assert [(m["width"], m["height"], m["alt_text"]) for m in post["media"]] == [
        (300, 200, "a red barn"),
        (240, 300, "a tall tree"),
        (250, 250, ""),
    ]


async def test_aspect_ratio_is_clamped_by_centre_crop(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    files = [("tall.jpg", jpeg_bytes((200, 400))), ("wide.jpg", jpeg_bytes((800, 200)))]
    response = await glimpse.upload(headers, files=files)
    await glimpse.run_jobs()
    post = (
        await glimpse.client.get(f"/api/v1/posts/{response.json()['id']}", headers=headers)
    ).json()
    tall, wide = post["media"]
    assert tall["width"] / tall["height"] == pytest.approx(4 / 5, abs=0.01)
    assert tall["width"] == 200
    assert wide["width"] / wide["height"] == pytest.approx(1.91, abs=0.01)
    assert wide["height"] == 200


# --- visibility -------------------------------------------------------------------------------


async def test_processing_post_is_visible_to_its_author_only(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    bob = await glimpse.signup("bob")
    response = await glimpse.upload(alice)
    post_id = response.json()["id"]
    mine = await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=alice)
    assert mine.status_code == 200 and mine.json()["status"] == "processing"
    theirs = await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=bob)
    unknown = await glimpse.client.get("/api/v1/posts/12345", headers=bob)
    # Indistinguishable from a post that does not exist.
    assert assert_error(theirs, 404) == assert_error(unknown, 404)
    grid = await glimpse.client.get("/api/v1/users/alice/posts", headers=alice)
    assert grid.json()["items"] == []
    await glimpse.run_jobs()
    theirs = await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=bob)
    assert theirs.status_code == 200 and theirs.json()["status"] == "ready"


async def test_private_accounts_posts_are_404_and_grid_403_for_others(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    bob = await glimpse.signup("bob")
    post = await publish(glimpse, alice)
    response = await glimpse.client.patch("/api/v1/me", headers=alice, json={"is_private": True})
    assert response.status_code == 200
    assert_error(await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=bob), 404)
    assert_error(await glimpse.client.get("/api/v1/users/alice/posts", headers=bob), 403)
    # Nor may bob delete it, or learn that it exists by trying.
    assert_error(await glimpse.client.delete(f"/api/v1/posts/{post['id']}", headers=bob), 404)
    # The owner still sees everything.
    assert (
        await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=alice)
    ).status_code == 200
    grid = await glimpse.client.get("/api/v1/users/alice/posts", headers=alice)
    assert [p["id"] for p in grid.json()["items"]] == [post["id"]]
    # Going public again takes effect on the next read.
    await glimpse.client.patch("/api/v1/me", headers=alice, json={"is_private": False})
    assert (await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=bob)).status_code == 200


# --- deletion ---------------------------------------------------------------------------------


async def test_delete_is_author_only_and_removes_the_post_and_its_files(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    bob = await glimpse.signup("bob")
    assert await post_count(glimpse, alice) == 0
    response = await glimpse.upload(alice)
    assert await post_count(glimpse, alice) == 0  # not while it is processing
    await glimpse.run_jobs()
    post_id = response.json()["id"]
    assert await post_count(glimpse, alice) == 1
    post = (await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=alice)).json()
    urls = [v["url"] for v in post["media"][0]["variants"]]
    assert len(glimpse.stored_files()) > 0

    assert_error(await glimpse.client.delete(f"/api/v1/posts/{post_id}", headers=bob), 403)
    assert_error(await glimpse.client.delete("/api/v1/posts/123456789", headers=alice), 404)
    assert_error(await glimpse.client.delete(f"/api/v1/posts/{post_id}"), 401)
    assert (await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=bob)).status_code == 200

    response = await glimpse.client.delete(f"/api/v1/posts/{post_id}", headers=alice)
    assert response.status_code == 204
    assert response.content == b""
    assert_error(await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=alice), 404)
    assert_error(await glimpse.client.delete(f"/api/v1/posts/{post_id}", headers=alice), 404)
    assert await post_count(glimpse, alice) == 0
    await glimpse.run_jobs()
    assert glimpse.stored_files() == []
    for url in urls:
        assert (await glimpse.client.get(url)).status_code == 404
    for table in ("posts", "media", "media_variants"):
        assert await count_rows(glimpse, table) == 0, table


async def test_deleting_a_processing_post_leaves_nothing_and_no_count(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    bob = await glimpse.signup("bob")
    post_id = (await glimpse.upload(alice)).json()["id"]
    # Someone else cannot even tell it exists.
    assert_error(await glimpse.client.delete(f"/api/v1/posts/{post_id}", headers=bob), 404)
    assert (
        await glimpse.client.delete(f"/api/v1/posts/{post_id}", headers=alice)
    ).status_code == 204
    await glimpse.run_jobs()
    assert glimpse.stored_files() == []
    assert await post_count(glimpse, alice) == 0
    for table in ("posts", "media", "media_variants"):
        assert await count_rows(glimpse, table) == 0, table


async def test_deleting_a_post_keeps_media_another_post_still_uses(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    # The same bytes and filter make the same content-addressed variants.
    first = await publish(glimpse, headers, size=(300, 200))
    second = await publish(glimpse, headers, size=(300, 200))
    urls = sorted(v["url"] for v in second["media"][0]["variants"])
    assert urls == sorted(v["url"] for v in first["media"][0]["variants"])
    response = await glimpse.client.delete(f"/api/v1/posts/{first['id']}", headers=headers)
    assert response.status_code == 204
    await glimpse.run_jobs()
    for url in urls:
        assert (await glimpse.client.get(url)).status_code == 200, url
    assert await post_count(glimpse, headers) == 1


# --- the profile grid -------------------------------------------------------------------------


async def test_grid_lists_ready_posts_newest_first_and_pages_without_repeats_or_gaps(
    glimpse: Glimpse,
) -> None:
    alice = await glimpse.signup("alice")
    bob = await glimpse.signup("bob")
    ids = []
    for i in range(5):
        response = await glimpse.upload(alice, files=[(f"{i}.jpg", jpeg_bytes((64, 48)))])
        ids.append(response.json()["id"])
    await glimpse.run_jobs()
    await glimpse.upload(alice)  # still processing: not in the grid
    expected = list(reversed(ids))

    everything = await glimpse.client.get("/api/v1/users/alice/posts", headers=bob)
    assert everything.status_code == 200
    assert [p["id"] for p in everything.json()["items"]] == expected
    assert everything.json()["next_cursor"] is None

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await glimpse.client.get("/api/v1/users/alice/posts", headers=bob, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 2
        assert all(p["status"] == "ready" for p in body["items"])
        seen += [p["id"] for p in body["items"]]
        pages += 1
        if pages == 1:
            # A post published mid-walk does not shift what is left of it.
            await publish(glimpse, alice, size=(64, 48))
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str) and cursor
        assert pages < 10
    assert seen == expected
    assert pages == 3


async def test_forged_or_corrupted_cursor_is_400(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    for i in range(3):
        await glimpse.upload(alice, files=[(f"{i}.jpg", jpeg_bytes((64, 48)))])
    await glimpse.run_jobs()
    page = await glimpse.client.get("/api/v1/users/alice/posts", headers=alice, params={"limit": 1})
    cursor = page.json()["next_cursor"]
    body, _, signature = cursor.partition(".")
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B")
    forged = [
        "garbage",
        "",
        ".",
        "a.b.c",
        cursor + "x",
        f"{flipped}.{signature}",
        f"{body}.{signature[::-1]}",
        f"{body}.",
        "eyJiZWZvcmUiOjF9.AAAAAAAAAAAAAAAA",  # {"before":1}, unsigned
        "é.é",
        "%00",
        "x" * 600,  # forged is forged, however long
    ]
    for bad in forged:
        response = await glimpse.client.get(
            "/api/v1/users/alice/posts", headers=alice, params={"cursor": bad}
        )
        if bad == "":
            assert response.status_code in (200, 400), response.text
            continue
        assert_error(response, 400)


async def test_limit_outside_1_to_100_is_422(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    for limit in ["0", "101", "-1", "abc", "1.5", "99999999999999999999999"]:
        response = await glimpse.client.get(
            "/api/v1/users/alice/posts", headers=alice, params={"limit": limit}
        )
        assert_error(response, 422)
    for limit in ["1", "100"]:
        response = await glimpse.client.get(
            "/api/v1/users/alice/posts", headers=alice, params={"limit": limit}
        )
        assert response.status_code == 200, response.text


async def test_grid_of_unknown_user_is_404(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    assert_error(await glimpse.client.get("/api/v1/users/nobody/posts", headers=alice), 404)
    assert_error(await glimpse.client.get("/api/v1/users/alice/posts"), 401)


async def test_malformed_or_out_of_range_post_ids_are_422_or_404(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    for post_id in [
        "abc",
        "1.5",
        "-1",
        "0",
        "9223372036854775807",
        "9223372036854775808",
        "99999999999999999999",
        "-99999999999999999999",
        "1e5",
        "%20",
    ]:
        for method in ("GET", "DELETE"):
            response = await glimpse.client.request(
                method, f"/api/v1/posts/{post_id}", headers=alice
            )
            assert response.status_code in (404, 422), (method, post_id, response.text)
            assert_error(response, response.status_code)


# --- filters ----------------------------------------------------------------------------------


async def test_filter_list_names_at_least_eleven_filters_with_normal(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    response = await glimpse.client.get("/api/v1/filters", headers=headers)
    assert response.status_code == 200
    items = response.json()["items"]
    assert len(items) >= 11
    assert all(set(f) >= {"name", "label"} for f in items)
    assert all(isinstance(f["name"], str) and isinstance(f["label"], str) for f in items)
    names = [f["name"] for f in items]
    assert "normal" in names
    assert len(set(names)) == len(names)
    # Every listed filter is accepted by an upload.
    for name in names:
        response = await glimpse.upload(
            headers, files=[("a.jpg", jpeg_bytes((16, 16)))], filter=name
        )
        assert response.status_code == 202, (name, response.text)
    assert_error(await glimpse.client.get("/api/v1/filters"), 401)
