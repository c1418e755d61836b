"""AVIF copies of photos (issue 19 item 4): `w1080` and `w640` in AVIF, made by a job that follows
a post becoming ready, on the embedded stack and the scale stack (S3, jobs delivered by RabbitMQ). They decode,
match the WebP's dimensions and pixels, are listed once made, never delay `ready`, survive a
delivery twice or a crash between storing and recording, and leave the store with their post."""

from __future__ import annotations

import asyncio
import io
import math
import threading
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat
from sqlalchemy import select, update

from glimpse.backends.queue.models import Job, JobState
from glimpse.config import Settings
from glimpse.media import decoding, images
from glimpse.ops.avif_backfill import backfill_avif
from glimpse.ops.backup import OperatorError
from glimpse.posts import avif, jobs, service
from glimpse.posts.models import Media
from tests.api.privacy_helpers import stored_keys
from tests.api.test_export import download
from tests.api.test_export import ready as exported
from tests.conftest import Glimpse, testdata

Headers = dict[str, str]
AVIF = "image/avif"
PHOTO = "camera/DSCN0010.jpg"  # 640x480: w1080 and w640 are both its own size
LARGE_PHOTO = "orientation/Landscape_6.jpg"  # rotated by EXIF: 1800x1200 upright


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """AVIF copies on (conftest switches them off for every other test), on each stack
    (tests/api/conftest.py)."""
    update: dict[str, Any] = {"avif_enabled": True, "origin_cache_bytes": 0}
    return settings.model_copy(update={**update, **getattr(request, "param", {})})


async def upload(glimpse: Glimpse, headers: Headers, photo: str, **fields: Any) -> str:
    data = testdata(photo).read_bytes()
    response = await glimpse.upload(headers, files=[("p.jpg", data)], **fields)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def get_post(glimpse: Glimpse, headers: Headers, post_id: str) -> dict[str, Any]:
    response = await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def variants(post: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(v["name"], v["content_type"]): v for m in post["media"] for v in m["variants"]}


def avif_names(post: dict[str, Any]) -> list[str]:
    return sorted(name for name, content_type in variants(post) if content_type == AVIF)


async def fetch(glimpse: Glimpse, variant: dict[str, Any]) -> tuple[str, bytes]:
    response = await glimpse.client.get(variant["url"])
    assert response.status_code == 200, response.text
    return response.headers["content-type"], response.content


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    mse = sum(ImageStat.Stat(diff).sum2) / (3 * a.width * a.height)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


async def avif_jobs(glimpse: Glimpse) -> list[Job]:
    async with glimpse.container.db.read() as session:
        rows = await session.execute(select(Job).where(Job.name == avif.MAKE_AVIF_JOB))
        return list(rows.scalars())


async def media_id_of(glimpse: Glimpse, post_id: str) -> int:
    async with glimpse.container.db.read() as session:
        rows = await session.execute(select(Media.id).where(Media.post_id == int(post_id)))
        return int(rows.scalar_one())


@pytest.mark.parametrize("photo", [PHOTO, LARGE_PHOTO])
async def test_avif_copies_are_listed_once_made_and_match_the_webp(
    glimpse: Glimpse, photo: str
) -> None:
    headers = await glimpse.signup()
    post_id = await upload(glimpse, headers, photo, filter="inkwell")
    await glimpse.run_jobs()
    post = await get_post(glimpse, headers, post_id)
    assert post["status"] == "ready"
    assert avif_names(post) == ["w1080", "w640"]
    listed = variants(post)
    for name in ("w1080", "w640"):
        webp, copy = listed[name, "image/webp"], listed[name, AVIF]
        assert (copy["width"], copy["height"]) == (webp["width"], webp["height"])
        content_type, data = await fetch(glimpse, copy)
        assert content_type == AVIF
        with Image.open(io.BytesIO(data)) as decoded:
            assert decoded.format == "AVIF" and decoded.size == (webp["width"], webp["height"])
            decoded.load()
            # The same pixels as the WebP (same decode, crop, filter and resize): two lossy
            # encodes of one picture are far closer than 30 dB; a picture not filtered with
            # inkwell, or cropped or turned otherwise, is far below it.
            _, webp_data = await fetch(glimpse, webp)
            with Image.open(io.BytesIO(webp_data)) as reference:
                assert psnr(decoded, reference) > 30, name
        # Smaller than the JPEG of the same size (the point of the copy).
        _, jpeg_data = await fetch(glimpse, listed[name, "image/jpeg"])
        assert len(data) < len(jpeg_data)
    # The small variants have none, and each format keeps its place: JPEG first per name.
    assert [v["content_type"] for v in post["media"][0]["variants"][:3]] == [
        "image/jpeg",
        "image/webp",
        AVIF,
    ]


async def test_a_post_is_ready_and_served_before_its_avif_copies_exist(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()
    entered, leave = threading.Event(), threading.Event()
    real = decoding.avif_in_child

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        leave.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(decoding, "avif_in_child", held)
    post_id = await upload(glimpse, headers, PHOTO)
    worker = asyncio.create_task(glimpse.run_jobs())
    try:
        assert await asyncio.to_thread(entered.wait, 20)
        # While the AVIF job works: ready, in the author's grid, its JPEG and WebP served.
        post = await get_post(glimpse, headers, post_id)
        assert post["status"] == "ready" and avif_names(post) == []
        grid = await glimpse.client.get("/api/v1/users/alice/posts", headers=headers)
        assert [p["id"] for p in grid.json()["items"]] == [post_id]
        assert (await fetch(glimpse, variants(post)["w1080", "image/webp"]))[1]
    finally:
        leave.set()
        await asyncio.wait_for(worker, 60)
    assert avif_names(await get_post(glimpse, headers, post_id)) == ["w1080", "w640"]


async def test_a_failing_avif_job_leaves_the_post_ready_and_a_backfill_makes_them_later(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise images.UndecodableImage("the encoder fell over")

    monkeypatch.setattr(decoding, "avif_in_child", broken)
    post_id = await upload(glimpse, headers, PHOTO)
    await glimpse.run_jobs()
    post = await get_post(glimpse, headers, post_id)
    assert post["status"] == "ready" and "error" not in post and avif_names(post) == []
    if glimpse.container.settings.queue_url == "":  # (the jobs table is the queue itself)
        [dead] = await avif_jobs(glimpse)
        assert dead.state == JobState.DEAD

    monkeypatch.undo()
    progress = await backfill_avif(glimpse.container, batch_size=10)
    assert progress.queued == 1
    await glimpse.run_jobs()
    assert avif_names(await get_post(glimpse, headers, post_id)) == ["w1080", "w640"]
    # Done: a second backfill finds nothing to queue.
    assert (await backfill_avif(glimpse.container, batch_size=10)).queued == 0


async def test_backfill_walks_in_batches_skips_what_has_copies_and_resumes_after_an_id(
    glimpse: Glimpse,
) -> None:
    headers = await glimpse.signup()
    glimpse.container.settings.avif_enabled = False  # posts made before AVIF copies were
    post_ids = [await upload(glimpse, headers, PHOTO, caption=str(n)) for n in range(5)]
    await glimpse.run_jobs()
    assert await avif_jobs(glimpse) == []
    glimpse.container.settings.avif_enabled = True
    media_ids = sorted([await media_id_of(glimpse, p) for p in post_ids])

    seen: list[tuple[int, int]] = []
    first = await backfill_avif(
        glimpse.container, batch_size=2, limit=3, report=lambda p: seen.append(astuple(p))
    )
    assert seen == [(2, media_ids[1]), (3, media_ids[2])]
    assert first.last_media_id == media_ids[2]
    await glimpse.run_jobs()
    # Resumed past the last id printed: the other two only.
    rest = await backfill_avif(glimpse.container, batch_size=2, after=first.last_media_id)
    assert rest.queued == 2
    await glimpse.run_jobs()
    for post_id in post_ids:
        assert avif_names(await get_post(glimpse, headers, post_id)) == ["w1080", "w640"]
    assert (await backfill_avif(glimpse.container, batch_size=2)).queued == 0


def astuple(progress: Any) -> tuple[int, int]:
    return (progress.queued, progress.last_media_id)


async def test_delivered_twice_the_job_and_the_photos_job_change_nothing(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    post_id = await upload(glimpse, headers, PHOTO)
    await glimpse.run_jobs()
    before = await get_post(glimpse, headers, post_id)
    files = stored_keys(glimpse)
    media_id = await media_id_of(glimpse, post_id)

    await jobs.make_avif_variants(glimpse.container, {"media_id": media_id})
    await jobs.process_media(glimpse.container, {"media_id": media_id})
    await glimpse.run_jobs()

    assert await get_post(glimpse, headers, post_id) == before
    assert avif_names(before) == ["w1080", "w640"]
    assert stored_keys(glimpse) == files


async def test_copies_made_again_replace_the_old_ones_which_are_purged(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()
    post_id = await upload(glimpse, headers, LARGE_PHOTO)
    await glimpse.run_jobs()
    old = {v["url"] for v in variants(await get_post(glimpse, headers, post_id)).values()}
    files = stored_keys(glimpse)

    # Other settings since (a lower quality): the copies are made again when asked to.
    glimpse.container.settings.avif_quality = 30
    media_id = await media_id_of(glimpse, post_id)
    async with glimpse.container.db.write() as session:
        await session.execute(
            update(Job).where(Job.name == avif.MAKE_AVIF_JOB).values(state=JobState.DEAD)
        )
    monkeypatch.setattr(jobs.repository, "has_avif_copies", _never)
    await jobs.make_avif_variants(glimpse.container, {"media_id": media_id})
    await glimpse.run_jobs()

    post = await get_post(glimpse, headers, post_id)
    assert avif_names(post) == ["w1080", "w640"]
    new = {v["url"] for v in variants(post).values()}
    assert len(new - old) == 2  # two new AVIF files, listed; the old two gone from the store
    assert len(stored_keys(glimpse)) == len(files)
    assert stored_keys(glimpse) != files


async def _never(*args: Any) -> bool:
    return False


@pytest.mark.parametrize("settings", [{"job_max_attempts": 2}], indirect=True)
async def test_copies_stored_by_runs_that_died_before_recording_them_are_purged(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()
    glimpse.container.settings.avif_enabled = False
    post_id = await upload(glimpse, headers, LARGE_PHOTO)
    await glimpse.run_jobs()
    without = stored_keys(glimpse)
    glimpse.container.settings.avif_enabled = True

    async def crash(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("the worker died here")

    # Each run stores both files, then fails before its rows are written, until it is buried.
    monkeypatch.setattr(avif, "record_avif_variants", crash)
    assert (await backfill_avif(glimpse.container, batch_size=10)).queued == 1
    await glimpse.run_jobs()
    assert len(stored_keys(glimpse) - without) == 2  # stored, recorded by nothing

    # The guard each run scheduled before storing (due after a lease) takes them away.
    async with glimpse.container.db.write() as session:
        await session.execute(
            update(Job)
            .where(Job.name == service.PURGE_KEYS_JOB, Job.state == JobState.QUEUED)
            .values(available_at=0)
        )
    await glimpse.run_jobs()
    assert stored_keys(glimpse) == without
    post = await get_post(glimpse, headers, post_id)
    assert post["status"] == "ready" and avif_names(post) == []


async def test_copies_made_for_a_post_deleted_meanwhile_are_purged(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()
    entered, leave = threading.Event(), threading.Event()
    real = decoding.avif_in_child

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        leave.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(decoding, "avif_in_child", held)
    post_id = await upload(glimpse, headers, PHOTO)
    worker = asyncio.create_task(glimpse.run_jobs())
    try:
        assert await asyncio.to_thread(entered.wait, 20)
        response = await glimpse.client.delete(f"/api/v1/posts/{post_id}", headers=headers)
        assert response.status_code == 204
    finally:
        leave.set()
        await asyncio.wait_for(worker, 60)
    await glimpse.run_jobs()
    assert stored_keys(glimpse) == set()


async def test_a_deleted_post_and_an_erased_account_take_their_avif_files_along(
    glimpse: Glimpse,
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    doomed = await upload(glimpse, alice, LARGE_PHOTO, filter="gingham")
    await upload(glimpse, bob, LARGE_PHOTO)
    await glimpse.run_jobs()
    avif_files = {k for k in stored_keys(glimpse) if k.endswith(".avif")}
    assert len(avif_files) == 4
    doomed_avif = {
        v["url"].removeprefix("/media/").split("?")[0]
        for (_, content_type), v in variants(await get_post(glimpse, alice, doomed)).items()
        if content_type == AVIF
    }

    response = await glimpse.client.delete(f"/api/v1/posts/{doomed}", headers=alice)
    assert response.status_code == 204
    await glimpse.run_jobs()
    assert {k for k in stored_keys(glimpse) if k.endswith(".avif")} == avif_files - doomed_avif

    response = await glimpse.client.request(
        "DELETE", "/api/v1/me", headers=bob, json={"password": "correct horse"}
    )
    assert response.status_code == 202, response.text
    await glimpse.run_jobs()
    assert stored_keys(glimpse) == set()


async def test_an_export_holds_the_originals_and_no_avif(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    post_id = await upload(glimpse, headers, PHOTO)
    await glimpse.run_jobs()
    assert avif_names(await get_post(glimpse, headers, post_id)) == ["w1080", "w640"]
    archive = await download(glimpse, headers, (await exported(glimpse, headers))["url"])
    names = archive.namelist()
    assert f"posts/{post_id}/1.jpg" in names
    assert archive.read(f"posts/{post_id}/1.jpg") == testdata(PHOTO).read_bytes()
    assert not [n for n in names if n.endswith(".avif")]


async def test_without_an_encoder_none_is_queued_a_queued_job_is_refused_the_backfill_says_so(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()
    glimpse.container.settings.avif_enabled = False
    queued_before = await upload(glimpse, headers, PHOTO)
    await glimpse.run_jobs()
    glimpse.container.settings.avif_enabled = True
    assert (await backfill_avif(glimpse.container, batch_size=10)).queued == 1
    monkeypatch.setattr(images, "avif_available", lambda: False)
    # A job queued while there was an encoder: buried with the reason, the post as it was.
    await glimpse.run_jobs()
    post = await get_post(glimpse, headers, queued_before)
    assert post["status"] == "ready" and avif_names(post) == []
    if glimpse.container.settings.queue_url == "":
        [dead] = await avif_jobs(glimpse)
        assert dead.state == JobState.DEAD and "avif_unavailable" in (dead.last_error or "")
    # A post made now queues none.
    later = await upload(glimpse, headers, PHOTO, caption="later")
    assert await glimpse.run_jobs() == 2  # the photo, then the post's fan-out: no AVIF job
    assert (await get_post(glimpse, headers, later))["status"] == "ready"
    with pytest.raises(OperatorError, match="cannot write AVIF"):
        await backfill_avif(glimpse.container, batch_size=10)


async def test_switched_off_nothing_is_queued_and_the_backfill_refuses(glimpse: Glimpse) -> None:
    glimpse.container.settings.avif_enabled = False
    headers = await glimpse.signup()
    post_id = await upload(glimpse, headers, PHOTO)
    assert await glimpse.run_jobs() == 2  # the photo, then the post's fan-out: no AVIF job
    assert (await get_post(glimpse, headers, post_id))["status"] == "ready"
    with pytest.raises(OperatorError, match="switched off"):
        await backfill_avif(glimpse.container, batch_size=10)


async def test_stories_and_videos_get_no_avif(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    response = await glimpse.client.post(
        "/api/v1/stories",
        headers=headers,
        files=[("file", ("s.jpg", testdata(PHOTO).read_bytes(), "image/jpeg"))],
    )
    assert response.status_code == 202, response.text
    assert await glimpse.run_jobs() == 1  # the story's photo, and nothing after it
    assert (await backfill_avif(glimpse.container, batch_size=10)).queued == 0
    # Nor would a stray job's copies be recorded for it.
    story_media = await media_id_of(glimpse, response.json()["id"])
    stray = [images.EncodedVariant("w1080", AVIF, 1, 1, b"not stored")]
    container = glimpse.container
    async with container.db.write() as session:
        assert not await avif.record_avif_variants(
            session, container.ids, container.settings, story_media, stray, ["v/ab/stray.avif"]
        )
    story = await glimpse.client.get(f"/api/v1/stories/{response.json()['id']}", headers=headers)
    assert AVIF not in {v["content_type"] for v in story.json()["media"]["variants"]}
