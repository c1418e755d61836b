"""The API over an S3-compatible store (moto_server): uploads reach the bucket, the origin
streams variants and video ranges from it, deletes and story purges empty it, and a store that
does not answer is a 503 with Retry-After and a /readyz that says so, never a 500."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from glimpse.app import create_app
from glimpse.backends.storage.s3 import S3Storage
from glimpse.config import Settings
from glimpse.db.migrate import upgrade_to_head
from glimpse.media import origin
from glimpse.posts import repository
from glimpse.posts.jobs import purge_media_keys
from glimpse.stories.jobs import purge_expired_stories
from tests.api.test_stories import Clock, _at
from tests.api.test_upload_validation import process
from tests.clips import Clip
from tests.conftest import Glimpse, assert_error, jpeg_bytes
from tests.databases import ON_EVERY_DATABASE
from tests.s3server import S3Server, bucket_keys
from tests.servers import free_port


@pytest.fixture
def settings(settings: Settings, s3_server: S3Server) -> Settings:
    # No origin cache: every GET below reads the bucket.
    return settings.model_copy(
        update={"storage_url": s3_server.storage_url(), "origin_cache_bytes": 0}
    )


def public_variants_policy(bucket: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{bucket}/v/*",
                }
            ],
        }
    )


def _keys(glimpse: Glimpse, prefix: str) -> list[str]:
    return [k for k in bucket_keys(glimpse.container.settings.storage_url) if k.startswith(prefix)]


def _variants(post: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(v["name"], v["content_type"]): v for m in post["media"] for v in m["variants"]}


async def test_a_photo_goes_to_the_bucket_is_served_from_it_and_leaves_it_when_deleted(
    glimpse: Glimpse,
) -> None:
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("p.jpg", jpeg_bytes((1200, 900)))])
    assert response.status_code == 202
    post = await process(glimpse, headers, response)
    assert post["status"] == "ready"
    assert len(_keys(glimpse, "originals/")) == 1
    variants = _variants(post)
    assert len(_keys(glimpse, "v/")) == len(variants)

    w1080 = variants["w1080", "image/jpeg"]
    whole = await glimpse.client.get(w1080["url"])
    assert whole.status_code == 200 and whole.content.startswith(b"\xff\xd8\xff")
    key = w1080["url"].removeprefix("/media/").split("?")[0]
    assert whole.content == await glimpse.container.storage.get_bytes(key)
    part = await glimpse.client.get(w1080["url"], headers={"Range": "bytes=10-109"})
    assert part.status_code == 206 and part.content == whole.content[10:110]
    assert part.headers["content-range"] == f"bytes 10-109/{len(whole.content)}"
    past = await glimpse.client.get(w1080["url"], headers={"Range": "bytes=99999999-"})
    assert past.status_code == 416

    deleted = await glimpse.client.delete(f"/api/v1/posts/{post['id']}", headers=headers)
    assert deleted.status_code == 204
    await glimpse.run_jobs()

    assert _keys(glimpse, "v/") == [] and _keys(glimpse, "originals/") == []
    assert (await glimpse.client.get(w1080["url"])).status_code == 404
    async with glimpse.container.db.read() as session:  # every deletion finished
        assert await repository.marked_deleting(session, [key]) == set()


async def test_a_video_is_streamed_from_the_bucket_whole_and_by_ranges(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Videos are larger than the files the origin reads whole: make this one count as large.
    monkeypatch.setattr(origin, "_SMALL_FILE", 1024)
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    post = await process(glimpse, headers, response)
    url = _variants(post)["mp4_720", "video/mp4"]["url"]
    key = url.removeprefix("/media/").split("?")[0]
    stored = await glimpse.container.storage.get_bytes(key)

    whole = await glimpse.client.get(url)
    assert whole.status_code == 200 and whole.content == stored
    assert whole.headers["content-length"] == str(len(stored))
    seek = await glimpse.client.get(url, headers={"Range": "bytes=2000-"})
    assert seek.status_code == 206 and seek.content == stored[2000:]
    assert seek.headers["content-range"] == f"bytes 2000-{len(stored) - 1}/{len(stored)}"
    small = await glimpse.client.get(url, headers={"Range": "bytes=100-199"})
    assert small.status_code == 206 and small.content == stored[100:200]


@pytest.mark.parametrize("settings", [{"story_ttl_seconds": 3600}], indirect=True)
async def test_an_expired_story_loses_its_variants_from_the_bucket_and_keeps_its_original(
    glimpse: Glimpse,
) -> None:
    clock = Clock(1_900_000_000.25)
    glimpse.container.clock = clock
    headers = await glimpse.signup()
    response = await glimpse.client.post(
        "/api/v1/stories",
        headers=headers,
        files=[("file", ("s.jpg", jpeg_bytes((900, 1600)), "image/jpeg"))],
    )
    assert response.status_code == 202
    await glimpse.run_jobs()
    assert _keys(glimpse, "v/")

    clock.now = _at(response.json()["expires_at"])
    await purge_expired_stories(glimpse.container, {})
    await glimpse.run_jobs()

    assert _keys(glimpse, "v/") == []
    assert len(_keys(glimpse, "originals/")) == 1  # kept for the archive and highlights


async def test_a_store_that_does_not_answer_is_503_and_readyz_names_it(
    settings: Settings, tmp_path: Path
) -> None:
    down = settings.model_copy(
        update={"storage_url": f"s3://media?endpoint=http://127.0.0.1:{free_port()}"}
    )
    upgrade_to_head(down.resolved_database_url)
    app = create_app(down)
    # The API starts without its store, and serves what needs none of it.
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://glimpse.test") as client:
            glimpse = Glimpse(client, app.state.container)
            headers = await glimpse.signup()

            response = await glimpse.upload(headers)
            assert_error(response, 503, "storage_unavailable")
            assert int(response.headers["retry-after"]) >= 1
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["storage"].startswith("failed")
            assert ready.json()["checks"]["database"] == "ok"
            feed = await client.get("/api/v1/feed", headers=headers)
            assert feed.status_code == 200
            media = await client.get(f"/media/v/ab/ab{'0' * 62}.jpg")
            assert_error(media, 503, "storage_unavailable")
            assert int(media.headers["retry-after"]) >= 1


async def _published_w320(glimpse: Glimpse) -> tuple[dict[str, str], dict[str, Any], bytes]:
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("p.jpg", jpeg_bytes((800, 600)))])
    post = await process(glimpse, headers, response)
    variant = _variants(post)["w320", "image/jpeg"]
    key = variant["url"].removeprefix("/media/").split("?")[0]
    return headers, post, await glimpse.container.storage.get_bytes(key)


async def test_presigned_redirects_send_clients_to_the_bucket_after_the_visibility_check(
    glimpse: Glimpse,
) -> None:
    glimpse.container.settings = glimpse.container.settings.model_copy(
        update={"storage_redirect": "presigned"}
    )
    headers, post, stored = await _published_w320(glimpse)
    url = _variants(post)["w320", "image/jpeg"]["url"]

    response = await glimpse.client.get(url)
    assert response.status_code == 302
    assert response.headers["cache-control"] == "private, no-store"
    location = response.headers["location"]
    assert "Signature=" in location or "X-Amz-Signature=" in location
    async with httpx.AsyncClient() as outside:
        assert (await outside.get(location)).content == stored

    # Gone private: the plain URL is refused here, before any redirect is made.
    await glimpse.client.patch("/api/v1/me", headers=headers, json={"is_private": True})
    assert_error(await glimpse.client.get(url), 404, "media_not_found")


async def test_public_redirects_are_for_public_media_only(glimpse: Glimpse) -> None:
    glimpse.container.settings = glimpse.container.settings.model_copy(
        update={"storage_redirect": "public"}
    )
    storage = glimpse.container.storage
    assert isinstance(storage, S3Storage)
    # What the operator does for this mode: variants readable by anyone, originals not.
    s3 = await storage._s3()
    await s3.put_bucket_policy(Bucket=storage.bucket, Policy=public_variants_policy(storage.bucket))
    headers, post, stored = await _published_w320(glimpse)
    url = _variants(post)["w320", "image/jpeg"]["url"]
    key = url.removeprefix("/media/")

    response = await glimpse.client.get(url)
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.endswith(f"/{key}") and "Signature" not in location
    async with httpx.AsyncClient() as outside:  # (moto's buckets answer anyone)
        assert (await outside.get(location)).content == stored

    await glimpse.client.patch("/api/v1/me", headers=headers, json={"is_private": True})
    shown = await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=headers)
    signed = _variants(shown.json())["w320", "image/jpeg"]["url"]
    private = await glimpse.client.get(signed)
    assert private.status_code == 200 and private.content == stored  # streamed, never a bucket URL


async def test_readyz_turns_503_while_the_bucket_cannot_be_written_and_back(
    glimpse: Glimpse, settings: Settings
) -> None:
    import boto3  # (moto's own dependency)

    from glimpse.backends.storage.s3 import S3Location

    location = S3Location.from_url(settings.storage_url)
    s3 = boto3.client("s3", endpoint_url=location.endpoint, region_name="us-east-1")
    try:
        assert (await glimpse.client.get("/readyz")).status_code == 200
        # The bucket gone (a wrong lifecycle rule, an operator's mistake): nothing can be stored.
        s3.delete_bucket(Bucket=location.bucket)  # empty: the probe left nothing in it
        response = await glimpse.client.get("/readyz")
        assert response.status_code == 503, response.text
        checks = response.json()["checks"]
        assert checks["storage"].startswith("failed:"), checks
        assert checks["database"] == checks["queue"] == "ok", checks
        s3.create_bucket(Bucket=location.bucket)
        response = await glimpse.client.get("/readyz")
        assert response.status_code == 200, response.text
    finally:
        s3.close()


@ON_EVERY_DATABASE
async def test_a_purge_leaves_a_marked_object_that_a_post_records_again(glimpse: Glimpse) -> None:
    # Purge A found a variant unused, marked it and is deleting it, when a processing job (in
    # another process) records the same bytes again: the job waits for A's mark to go, then
    # stores the object again. A second purge B of the same key must leave it, object and
    # mark: were B to delete it after A unmarked and the job stored it, the post would lose it.
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("p.jpg", jpeg_bytes((1200, 900)))])
    post = await process(glimpse, headers, response)
    key = _variants(post)["w1080", "image/jpeg"]["url"].removeprefix("/media/").split("?")[0]
    async with glimpse.container.db.write() as session:  # A's mark
        await repository.mark_deleting(session, [key], glimpse.container.now())

    await purge_media_keys(glimpse.container, {"keys": [key]})  # B

    assert await glimpse.container.storage.size(key) is not None
    async with glimpse.container.db.read() as session:  # A's to take away
        assert await repository.marked_deleting(session, [key]) == {key}
    # Once nothing records it, a purge deletes it and its mark (A's, left by a purge that died).
    deleted = await glimpse.client.delete(f"/api/v1/posts/{post['id']}", headers=headers)
    assert deleted.status_code == 204
    await glimpse.run_jobs()
    assert await glimpse.container.storage.size(key) is None
    async with glimpse.container.db.read() as session:
        assert await repository.marked_deleting(session, [key]) == set()
