"""Video posts and stories through the API (API.md: Media of kind "video", the video limits, the
media origin's byte ranges): what is accepted and what it becomes, what is refused and that a
refusal leaves nothing behind."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import struct
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import pytest
from PIL import Image
from sqlalchemy import select, text

from glimpse.backends.queue.base import ClaimedJob, JobConsumer
from glimpse.jobs import DEFAULT_LANE, VIDEO_LANE, registry
from glimpse.posts import jobs as posts_jobs
from glimpse.posts import service
from glimpse.posts.models import Media
from glimpse.worker import run_worker
from tests.api import test_stories as stories_tests
from tests.api.test_upload_validation import assert_nothing_written, process, refused
from tests.clips import Clip, declare_duration, make_clip, top_level_boxes
from tests.conftest import Glimpse, jpeg_bytes


def variants_of(media: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(v["name"], v["content_type"]): v for v in media["variants"]}


async def fetch(glimpse: Glimpse, url: str, **headers: str) -> Any:
    return await glimpse.client.get(url, headers=headers)


async def test_an_mp4_post_becomes_720_and_480_renditions_and_a_poster(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    headers = await glimpse.signup()
    clip = clips["h264"]
    response = await glimpse.upload(headers, files=[("clip.mp4", clip.path.read_bytes())])
    assert response.status_code == 202, response.text
    [media] = response.json()["media"]
    # Known from the container before any transcoding: its kind, its length, no progress yet.
    assert (media["kind"], media["progress"], media["variants"]) == ("video", 0, [])
    assert media["duration_s"] == pytest.approx(clip.seconds, abs=0.05)
    post = await process(glimpse, headers, response)
    assert post["status"] == "ready"
    [media] = post["media"]
    assert media["kind"] == "video" and "progress" not in media
    assert (media["width"], media["height"]) == (1280, 720)
    assert media["duration_s"] == pytest.approx(clip.seconds, abs=1 / clip.fps)
    assert media["blurhash"]
    found = variants_of(media)
    assert set(found) == {
        ("mp4_720", "video/mp4"),
        ("mp4_480", "video/mp4"),
        ("poster", "image/jpeg"),
        ("poster", "image/webp"),
    }
    assert (found["mp4_480", "video/mp4"]["width"], found["mp4_480", "video/mp4"]["height"]) == (
        854,
        480,
    )
    for (name, content_type), variant in found.items():
        served = await fetch(glimpse, variant["url"])
        assert served.status_code == 200
        assert served.headers["content-type"] == content_type
        if content_type == "video/mp4":
            boxes = top_level_boxes(served.content)
            assert boxes.index("moov") < boxes.index("mdat")
            with av.open(io.BytesIO(served.content)) as container:
                stream = container.streams.video[0]
                assert (stream.codec_context.width, stream.codec_context.height) == (
                    variant["width"],
                    variant["height"],
                )
        else:
            assert Image.open(io.BytesIO(served.content)).size == (1280, 720), name


async def test_the_media_origin_serves_mp4_byte_ranges(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    post = await process(glimpse, headers, response)
    url = variants_of(post["media"][0])["mp4_720", "video/mp4"]["url"]
    whole = (await fetch(glimpse, url)).content
    size = len(whole)
    assert (await fetch(glimpse, url)).headers["accept-ranges"] == "bytes"
    # What a browser's <video> asks for first, then a seek into the middle, then the tail.
    first = await fetch(glimpse, url, Range="bytes=0-")
    assert first.status_code == 206 and first.content == whole
    assert first.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    middle = await fetch(glimpse, url, Range="bytes=100-199")
    assert middle.status_code == 206 and middle.content == whole[100:200]
    assert middle.headers["content-range"] == f"bytes 100-199/{size}"
    assert middle.headers["content-length"] == "100"
    tail = await fetch(glimpse, url, Range="bytes=-50")
    assert tail.status_code == 206 and tail.content == whole[-50:]
    past = await fetch(glimpse, url, Range=f"bytes={size}-")
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{size}"
    # Ranges past either end are cut to the file (RFC 9110 14.1.2), not refused.
    huge = "9" * 30  # past any file, and past 64 bits
    for asked in (
        f"bytes=-{size * 10}",
        f"bytes=0-{size * 10}",
        f"bytes=0-{huge}",
        f"bytes=-{huge}",
    ):
        clamped = await fetch(glimpse, url, Range=asked)
        assert clamped.status_code == 206 and clamped.content == whole, asked
        assert clamped.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
    assert (await fetch(glimpse, url, Range=f"bytes={huge}-")).status_code == 416
    for one in (0, 5, size - 1):  # one byte, as players ask for
        single = await fetch(glimpse, url, Range=f"bytes={one}-{one}")
        assert single.status_code == 206 and single.content == whole[one : one + 1]
        assert single.headers["content-range"] == f"bytes {one}-{one}/{size}"
    end = await fetch(glimpse, url, Range=f"bytes={size - 10}-{size * 10}")
    assert end.status_code == 206 and end.content == whole[-10:]


@pytest.mark.parametrize(
    "settings", [{"origin_cache_bytes": 0, "origin_cache_ttl_seconds": 0}], indirect=True
)
async def test_ranges_of_an_mp4_larger_than_the_small_file_size_are_streamed_from_disk(
    glimpse: Glimpse, clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Videos are larger than the files the origin reads whole: make this one count as large.
    from glimpse.media import origin

    monkeypatch.setattr(origin, "_SMALL_FILE", 1024)
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    post = await process(glimpse, headers, response)
    url = variants_of(post["media"][0])["mp4_720", "video/mp4"]["url"]
    whole = (await fetch(glimpse, url)).content
    part = await fetch(glimpse, url, Range="bytes=2000-")
    assert part.status_code == 206 and part.content == whole[2000:]
    assert part.headers["content-range"] == f"bytes 2000-{len(whole) - 1}/{len(whole)}"


@pytest.mark.parametrize(
    "settings", [{"origin_cache_bytes": 0, "origin_cache_ttl_seconds": 0}], indirect=True
)
async def test_ranges_not_understood_get_the_whole_of_a_large_mp4(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A range the origin ignores (RFC 9110: invalid, another unit, several) sends the whole
    # file, large or small. A video past the small-file size was handed to Starlette's
    # FileResponse, which read the Range header again and answered a text/plain 400.
    from glimpse.media import origin

    monkeypatch.setattr(origin, "_SMALL_FILE", 1024)
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    post = await process(glimpse, headers, response)
    url = variants_of(post["media"][0])["mp4_720", "video/mp4"]["url"]
    whole = (await fetch(glimpse, url)).content
    for header in ["bytes=50-10", "garbage", "items=0-5", "bytes=0-1e3", "bytes=0-1,5-6"]:
        answer = await fetch(glimpse, url, Range=header)
        assert answer.status_code == 200, (header, answer.status_code, answer.text[:80])
        assert answer.content == whole, header
        assert answer.headers["content-type"] == "video/mp4"
        assert answer.headers["content-length"] == str(len(whole))


async def test_duration_is_the_container_s_until_the_transcode_measures_it(
    glimpse: Glimpse, tmp_path: Path
) -> None:
    # A WebM of 0.3 s whose header says 5 s: the upload's answer can only quote the header;
    # once transcoded, the post says how long its renditions are.
    clip = make_clip(
        tmp_path / "clip.webm", container="webm", codec="libvpx-vp9", audio=False, seconds=0.3
    )
    data = bytearray(clip.path.read_bytes())
    duration = data.find(b"\x44\x89\x88")  # Segment Info's Duration: an 8-byte float
    assert duration != -1
    data[duration + 3 : duration + 11] = struct.pack(">d", 5000.0)  # (in milliseconds)
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.webm", bytes(data))])
    assert response.status_code == 202, response.text
    assert response.json()["media"][0]["duration_s"] == pytest.approx(5.0)
    post = await process(glimpse, headers, response)
    assert post["status"] == "ready"
    assert post["media"][0]["duration_s"] == pytest.approx(0.3, abs=1 / clip.fps)


async def test_a_carousel_mixes_photos_and_videos_in_order(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    headers = await glimpse.signup()
    files = [
        ("one.jpg", jpeg_bytes()),
        ("two.mov", clips["hevc"].path.read_bytes()),
        ("three.webm", clips["vp9"].path.read_bytes()),
        ("four.mp4", clips["rotated"].path.read_bytes()),
    ]
    response = await glimpse.upload(headers, files=files, alt_text=["a", "b", "c", "d"])
    post = await process(glimpse, headers, response)
    assert post["status"] == "ready"
    kinds = [(m["kind"], m["alt_text"], m["width"], m["height"]) for m in post["media"]]
    assert kinds == [
        ("image", "a", 800, 600),
        ("video", "b", 320, 240),
        ("video", "c", 320, 240),
        ("video", "d", 240, 320),  # filmed sideways, shown upright
    ]
    assert "duration_s" not in post["media"][0]


async def test_a_video_story_gets_a_full_screen_9_by_16_rendition(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    headers = await glimpse.signup()
    response = await glimpse.client.post(
        "/api/v1/stories",
        headers=headers,
        files=[("file", ("story.mp4", clips["h264"].path.read_bytes(), "video/mp4"))],
    )
    assert response.status_code == 202, response.text
    await glimpse.run_jobs()
    story = (
        await glimpse.client.get(f"/api/v1/stories/{response.json()['id']}", headers=headers)
    ).json()
    assert story["status"] == "ready"
    found = variants_of(story["media"])
    assert (
        found["mp4_story", "video/mp4"]["width"],
        found["mp4_story", "video/mp4"]["height"],
    ) == (
        404,
        718,
    )
    assert ("mp4_720", "video/mp4") in found and ("poster", "image/jpeg") in found


@pytest.mark.parametrize("settings", [{"max_story_video_seconds": 0.5}], indirect=True)
async def test_a_story_is_held_to_the_story_length_and_a_post_is_not(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    headers = await glimpse.signup()
    data = clips["h264"].path.read_bytes()  # 1 s: over the stories' 0.5 s, under the posts' 90
    response = await glimpse.client.post(
        "/api/v1/stories", headers=headers, files=[("file", ("s.mp4", data, "video/mp4"))]
    )
    error = await refused(glimpse, response, 413, "video_too_long")
    assert "0.5 seconds" in error["message"]
    assert (await glimpse.upload(headers, files=[("p.mp4", data)])).status_code == 202


# --- refused, leaving nothing behind ----------------------------------------------------------


async def test_a_zero_length_file_named_mp4_is_415(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("empty.mp4", b"")])
    await refused(glimpse, response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content",
    [
        b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nhttp://evil/0.ts\n",
        b"Just some notes I saved with the wrong name.\n" * 20,
    ],
    ids=["hls-playlist", "text"],
)
async def test_text_named_mp4_is_415(glimpse: Glimpse, content: bytes) -> None:
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("video.mp4", content)])
    error = await refused(glimpse, response, 415, "unsupported_media_type")
    assert "MP4, MOV or WebM" in error["message"]


async def test_an_mp4_header_followed_by_junk_is_415(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    junk = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 400
    response = await glimpse.upload(headers, files=[("junk.mp4", junk)])
    error = await refused(glimpse, response, 415, "unreadable_video")
    # In words: neither the server's paths nor FFmpeg's error numbers.
    assert "staging" not in error["message"] and "Errno" not in error["message"]
    # Whole boxes, but no index: FFmpeg itself refuses it, and is quoted only in words.
    whole = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + (8 + 4000).to_bytes(4, "big")
    whole += b"junk" + bytes(range(250)) * 16
    response = await glimpse.upload(headers, files=[("boxes.mp4", whole)])
    error = await refused(glimpse, response, 415, "unreadable_video")
    assert "staging" not in error["message"] and "Errno" not in error["message"]
    assert ".mp4" not in error["message"].replace("boxes.mp4", "")


async def test_a_video_cut_off_mid_transfer_is_415_at_upload(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    # Its header and first frames are whole (a faststart file puts the index first), so only
    # the boxes' declared sizes show that the rest is missing.
    headers = await glimpse.signup()
    data = clips["h264"].path.read_bytes()
    moov = data.find(b"moov") - 4
    mdat = data.find(b"mdat") - 4
    assert moov >= 0 and mdat >= 0
    cut = data[: max(moov, mdat) + (len(data) - max(moov, mdat)) // 2]
    response = await glimpse.upload(headers, files=[("cut.mp4", cut)])
    error = await refused(glimpse, response, 415, "unreadable_video")
    assert "incomplete" in error["message"]


async def test_a_mov_cut_off_mid_transfer_is_415_at_upload(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    headers = await glimpse.signup()
    data = clips["hevc"].path.read_bytes()
    response = await glimpse.upload(headers, files=[("cut.mov", data[: len(data) * 2 // 3])])
    await refused(glimpse, response, 415, "unreadable_video")


async def test_a_video_in_a_codec_glimpse_cannot_play_is_415(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    from glimpse.media import video_planning

    monkeypatch.setattr(video_planning, "VIDEO_CODECS", frozenset({"vp9"}))
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    error = await refused(glimpse, response, 415, "unsupported_video_codec")
    assert "h264" in error["message"]


async def test_a_10_hour_video_declared_in_its_header_is_413(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    headers = await glimpse.signup()
    data = declare_duration(clips["h264"].path.read_bytes(), 10 * 3600)
    response = await glimpse.upload(headers, files=[("long.mp4", data)])
    error = await refused(glimpse, response, 413, "video_too_long")
    assert "90 seconds" in error["message"]


@pytest.fixture(scope="module")
def limit_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Clips past the limits of API.md in the one way each, a few KB each."""
    folder = tmp_path_factory.mktemp("limit-clips")
    wide = make_clip(folder / "wide.mp4", size=(3856, 16), seconds=0.1, audio=False)
    fast = make_clip(folder / "fast.mp4", size=(64, 64), seconds=0.05, fps=240, audio=False)
    tiny = make_clip(folder / "tiny.mp4", size=(8, 8), seconds=0.1, audio=False)
    strip = make_clip(folder / "strip.mp4", size=(640, 20), seconds=0.1, audio=False)
    return {
        "strip": strip.path.read_bytes(),
        "wide": wide.path.read_bytes(),
        "fast": fast.path.read_bytes(),
        "tiny": tiny.path.read_bytes(),
    }


@pytest.mark.parametrize(
    ("clip", "code"), [("wide", "too_many_pixels"), ("fast", "frame_rate_too_high")]
)
async def test_past_4k_or_past_120_fps_is_413(
    glimpse: Glimpse, limit_clips: dict[str, bytes], clip: str, code: str
) -> None:
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.mp4", limit_clips[clip])])
    await refused(glimpse, response, 413, code)


async def test_a_video_too_small_to_play_without_upscaling_is_422(
    glimpse: Glimpse, limit_clips: dict[str, bytes]
) -> None:
    # 8x8: its renditions could only be made by blowing it up (API.md: never upscaled).
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("dot.mp4", limit_clips["tiny"])])
    error = await refused(glimpse, response, 422, "video_too_small")
    assert "8x8" in error["message"]


async def test_a_story_whose_9_by_16_middle_is_too_small_is_422_and_a_post_is_not(
    glimpse: Glimpse, limit_clips: dict[str, bytes]
) -> None:
    # 640x20 plays as a post; a story's full-screen rendition of it would be 10 px wide.
    headers = await glimpse.signup()
    data = limit_clips["strip"]
    response = await glimpse.client.post(
        "/api/v1/stories", headers=headers, files=[("file", ("s.mp4", data, "video/mp4"))]
    )
    await refused(glimpse, response, 422, "video_too_small")
    assert (await glimpse.upload(headers, files=[("p.mp4", data)])).status_code == 202


async def test_an_av1_video_is_accepted_and_transcoded(glimpse: Glimpse, tmp_path: Path) -> None:
    # AV1 is decoded by a decoder named "libdav1d": what is checked is the codec's own name.
    clip = make_clip(tmp_path / "av1.mp4", codec="libsvtav1", size=(320, 240), seconds=0.3)
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("av1.mp4", clip.path.read_bytes())])
    post = await process(glimpse, headers, response)
    assert post["status"] == "ready", post.get("error")
    [media] = post["media"]
    assert (media["width"], media["height"]) == (320, 240)
    assert ("mp4_480", "video/mp4") in variants_of(media)


@pytest.mark.parametrize(
    "settings", [{"video_check_concurrency": 1, "video_check_queue": 0}], indirect=True
)
async def test_with_every_video_check_busy_a_video_is_503_and_a_photo_goes_through(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checks run in a pool of their own: a slow one (a crafted file) takes a video slot, never
    # the threads a photo upload's own checks and storage need.
    import threading

    from glimpse.media import decoding

    release = threading.Event()
    started = threading.Event()
    real_probe = decoding.probe_video_in_child

    def slow_probe(*args: Any) -> Any:
        started.set()
        release.wait(60)
        return real_probe(*args)

    monkeypatch.setattr(decoding, "probe_video_in_child", slow_probe)
    headers = await glimpse.signup()
    video_bytes = clips["h264"].path.read_bytes()
    first = asyncio.ensure_future(glimpse.upload(headers, files=[("a.mp4", video_bytes)]))
    try:
        assert await asyncio.to_thread(started.wait, 60)
        second = await glimpse.upload(headers, files=[("b.mp4", video_bytes)])
        assert second.status_code == 503, second.text
        assert second.json()["error"]["code"] == "busy"
        assert int(second.headers["retry-after"]) > 0
        photo = await glimpse.upload(headers, files=[("p.jpg", jpeg_bytes((400, 300)))])
        assert photo.status_code == 202, photo.text
    finally:
        release.set()
    assert (await first).status_code == 202
    # Nothing of the refused one stayed: the first video and the photo, and their originals only.
    assert len(glimpse.stored_files()) == 2
    assert list(glimpse.container.storage.staging_dir().iterdir()) == []


@pytest.mark.parametrize("settings", [{"max_video_bytes": 16 * 1024}], indirect=True)
async def test_a_video_over_the_size_limit_is_413_while_a_photo_keeps_its_own(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("big.mp4", clips["h264"].path.read_bytes())])
    error = await refused(glimpse, response, 413, "file_too_large")
    assert "video" in error["message"]
    # (The photo limit is not the video one: a 20 KB photo is fine.)
    photo = jpeg_bytes((400, 300))
    assert len(photo) > 1024
    assert (await glimpse.upload(headers, files=[("p.jpg", photo)])).status_code == 202


@pytest.mark.parametrize("settings", [{"max_video_bytes": 64 * 1024}], indirect=True)
async def test_a_video_of_exactly_the_size_limit_is_accepted_and_a_byte_more_is_not(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    # The clip, made exactly 64 KB long by a `free` box after it (which players skip).
    headers = await glimpse.signup()
    data = clips["rotated"].path.read_bytes()
    padding = 64 * 1024 - len(data)
    assert padding >= 8
    exact = data + padding.to_bytes(4, "big") + b"free" + bytes(padding - 8)
    response = await glimpse.upload(headers, files=[("exact.mp4", exact + b"\0")])
    await refused(glimpse, response, 413, "file_too_large")
    response = await glimpse.upload(headers, files=[("exact.mp4", exact)])
    assert response.status_code == 202, response.text


async def test_a_gif_named_mp4_is_the_image_it_is(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    gif = io.BytesIO()
    Image.new("RGB", (320, 240), (10, 200, 30)).save(gif, "GIF")
    response = await glimpse.upload(headers, files=[("funny.mp4", gif.getvalue())])
    post = await process(glimpse, headers, response)
    assert post["status"] == "ready"
    [media] = post["media"]
    assert media["kind"] == "image" and "duration_s" not in media
    assert ("w320", "image/jpeg") in variants_of(media)


# --- processing -------------------------------------------------------------------------------


async def test_a_video_whose_pictures_are_damaged_fails_its_post_with_a_reason(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    headers = await glimpse.signup()
    data = bytearray(clips["h264"].path.read_bytes())
    # The index (at the end of this clip) and the first pictures survive; the rest is noise.
    mdat = data.find(b"mdat")
    for at in range(mdat + 4000, data.find(b"moov") - 8):
        data[at] = (at * 31) & 0xFF
    response = await glimpse.upload(headers, files=[("damaged.mp4", bytes(data))])
    post = await process(glimpse, headers, response)
    if post["status"] == "ready":
        pytest.skip("the decoder concealed the damage")  # (x264 output of noise is still video)
    assert post["status"] == "failed"
    assert post["error"]["code"] == "undecodable_video"


async def test_transcoding_twice_gives_the_same_files_and_one_ready_post(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.webm", clips["vp9"].path.read_bytes())])
    post = await process(glimpse, headers, response)
    async with glimpse.container.db.read() as session:
        media_id = (await session.execute(select(Media.id))).scalar_one()
    before = sorted(v["url"] for v in post["media"][0]["variants"])
    stored = glimpse.stored_files()
    # Delivered again (at least once): one set of variants, every one served, and no more files
    # stored than before. (The bytes are usually the same, so the content-addressed keys too;
    # the attack run once saw a different mp4_720 from the same VP9 source, so the keys are not
    # required to match: a replaced rendition must be purged, never left orphaned.)
    from glimpse.posts.jobs import transcode_video

    await transcode_video(glimpse.container, {"media_id": media_id})
    await glimpse.run_jobs()
    again = (await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=headers)).json()
    urls = sorted(v["url"] for v in again["media"][0]["variants"])
    assert len(urls) == len(before)
    for url in urls:
        assert (await glimpse.client.get(url, headers=headers)).status_code == 200
    assert len(glimpse.stored_files()) == len(stored)
    assert list(glimpse.container.storage.staging_dir().iterdir()) == []
    me = (await glimpse.client.get("/api/v1/me", headers=headers)).json()
    assert me["post_count"] == 1


def _other_bytes_each_run(
    monkeypatch: pytest.MonkeyPatch, second_waits_for: threading.Event | None = None
) -> list[int]:
    """Make each transcode give other bytes than the one before (as the encoder may: it need not
    be bit-exact); the list counts the runs. The second run ends only once `second_waits_for`
    is set, if given."""
    from glimpse.media import decoding, video

    real = decoding.transcode_in_child
    runs: list[int] = []
    counting = threading.Lock()

    def other_bytes(*args: Any, **kwargs: Any) -> video.ProcessedVideo:
        with counting:
            run = len(runs)
            runs.append(run)
        processed: video.ProcessedVideo = real(*args, **kwargs)
        if run == 1 and second_waits_for is not None:
            assert second_waits_for.wait(60)
        variants = []
        for variant in processed.variants:
            if isinstance(variant, video.VideoFile):
                with variant.path.open("ab") as out:
                    # (trailing bytes after the last box: players ignore them)
                    out.write(bytes([run + 1]))
                variant = dataclasses.replace(variant, size=variant.size + 1)
            variants.append(variant)
        return dataclasses.replace(processed, variants=variants)

    monkeypatch.setattr(decoding, "transcode_in_child", other_bytes)
    return runs


async def test_a_transcode_delivered_again_keeps_the_renditions_already_listed(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Delivered again after a run that recorded its renditions (its worker died before the
    # job was settled): nothing is made again. Other bytes would replace files that pages and
    # summaries kept in other processes (and clients) already link.
    runs = _other_bytes_each_run(monkeypatch)
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.webm", clips["vp9"].path.read_bytes())])
    post = await process(glimpse, headers, response)
    before = {v["url"] for v in post["media"][0]["variants"]}
    stored = glimpse.stored_files()
    async with glimpse.container.db.read() as session:
        media_id = (await session.execute(select(Media.id))).scalar_one()
    await posts_jobs.transcode_video(glimpse.container, {"media_id": media_id})
    await glimpse.run_jobs()
    assert runs == [0]
    again = (await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=headers)).json()
    assert {v["url"] for v in again["media"][0]["variants"]} == before
    assert glimpse.stored_files() == stored


async def test_a_transcode_delivered_again_makes_anew_renditions_whose_files_went_missing(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The recorded renditions' files are gone (a purge of another post with the same bytes
    # took them, and the run that recorded them was cut short before storing them again): a
    # run again makes them anew, and the post lists what it stored, even of other bytes.
    runs = _other_bytes_each_run(monkeypatch)
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.webm", clips["vp9"].path.read_bytes())])
    post = await process(glimpse, headers, response)
    async with glimpse.container.db.read() as session:
        media_id = (await session.execute(select(Media.id))).scalar_one()
        keys = list((await session.execute(text("SELECT key FROM media_variants"))).scalars())
    await glimpse.container.storage.delete_many([k for k in keys if k.endswith(".mp4")])
    await posts_jobs.transcode_video(glimpse.container, {"media_id": media_id})
    await glimpse.run_jobs()
    assert runs == [0, 1]
    again = (await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=headers)).json()
    urls = [v["url"] for v in again["media"][0]["variants"]]
    assert len(urls) == len(post["media"][0]["variants"])
    for url in urls:
        assert (await glimpse.client.get(url, headers=headers)).status_code == 200


async def test_two_runs_at_once_list_the_first_ones_renditions_and_purge_the_others(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two runs of one job at once (the first's lease lapsed while it worked on): both got past
    # the check at their start, each stores its own bytes, the first to record wins, and what
    # the other stored is purged.
    first_recorded = threading.Event()
    runs = _other_bytes_each_run(monkeypatch, second_waits_for=first_recorded)
    # (Each run, at its start, removes what an earlier run of the job left in staging: started
    # at once, the second could take the original the first just fetched from the store.)
    monkeypatch.setattr(posts_jobs, "_remove_staged", lambda *args: None)
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.webm", clips["vp9"].path.read_bytes())])
    assert response.status_code == 202, response.text
    post_id = response.json()["id"]
    async with glimpse.container.db.read() as session:
        media_id = (await session.execute(select(Media.id))).scalar_one()
    payload = {"media_id": media_id}

    async def seen_once_ready() -> set[str]:
        # What a client is sent once the first run has recorded (the second still working).
        try:
            while True:
                shown = await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=headers)
                if shown.json()["status"] == "ready":
                    return {v["url"] for v in shown.json()["media"][0]["variants"]}
                await asyncio.sleep(0.05)
        finally:
            first_recorded.set()

    *_, first = await asyncio.gather(
        posts_jobs.transcode_video(glimpse.container, payload),
        posts_jobs.transcode_video(glimpse.container, payload),
        seen_once_ready(),
    )
    assert runs == [0, 1]
    post = await process(glimpse, headers, response)  # (the queued job: a third, that stops)
    assert runs == [0, 1]
    assert post["status"] == "ready"
    urls = [v["url"] for v in post["media"][0]["variants"]]
    assert set(urls) == first
    async with glimpse.container.db.read() as session:
        recorded = (await session.execute(text("SELECT count(*) FROM media_variants"))).scalar()
    assert recorded == len(urls)
    for url in urls:
        assert (await glimpse.client.get(url, headers=headers)).status_code == 200
    videos = [p for p in glimpse.stored_files() if "/v/" in str(p)]
    assert len(videos) == len(urls), videos  # the other run's files are gone
    assert list(glimpse.container.storage.staging_dir().iterdir()) == []
    me = (await glimpse.client.get("/api/v1/me", headers=headers)).json()
    assert me["post_count"] == 1


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # (SQLite: one writer)
async def test_a_run_that_records_while_the_first_commits_keeps_the_first_ones_renditions(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two runs at once that record at once: the second asks whether the media is processed
    # while the first holds the post's lock, not yet committed. Asked under the lock, it waits
    # and finds the first one's renditions; asked before it (PostgreSQL reads what is committed),
    # it would find none and replace them once the lock is free.
    runs = _other_bytes_each_run(monkeypatch)
    # (Each run, at its start, removes what an earlier run of the job left in staging: started
    # at once, the second could take the original the first just fetched from the store.)
    monkeypatch.setattr(posts_jobs, "_remove_staged", lambda *args: None)
    real = service.record_processed_media
    # Both runs wait here until each has transcoded (a run's progress updates wait for the
    # media row that the other's record has locked), then the first records, and holds its
    # transaction open while the second asks.
    both_arrived, first_in = asyncio.Event(), asyncio.Event()
    arrived: list[int] = []
    recorded: list[bool] = []
    first_keys: list[str] = []

    async def recording(*args: Any, **kwargs: Any) -> bool:
        run = len(arrived)
        arrived.append(run)
        if run == 1:
            both_arrived.set()
        if run == 0:
            await asyncio.wait_for(both_arrived.wait(), 60)
            first_keys.extend(args[5])  # (session, ids, settings, media, processed, keys)
            done = await real(*args, **kwargs)  # (the post locked, nothing committed yet)
            first_in.set()
            await asyncio.sleep(0.5)  # (the second run asks meanwhile, then waits for the lock)
        else:
            await asyncio.wait_for(first_in.wait(), 60)
            done = await real(*args, **kwargs)
        recorded.append(done)
        return done

    monkeypatch.setattr(service, "record_processed_media", recording)
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.webm", clips["vp9"].path.read_bytes())])
    assert response.status_code == 202, response.text
    async with glimpse.container.db.read() as session:
        media_id = (await session.execute(select(Media.id))).scalar_one()
    payload = {"media_id": media_id}
    await asyncio.gather(
        posts_jobs.transcode_video(glimpse.container, payload),
        posts_jobs.transcode_video(glimpse.container, payload),
    )
    assert runs == [0, 1] and recorded == [True, False]
    post = await process(glimpse, headers, response)  # (the queued job: a third, that stops)
    assert runs == [0, 1]
    async with glimpse.container.db.read() as session:
        keys = (await session.execute(text("SELECT key FROM media_variants"))).scalars()
        assert sorted(keys) == sorted(first_keys)  # the first one's, not replaced
    urls = [v["url"] for v in post["media"][0]["variants"]]
    videos = [p for p in glimpse.stored_files() if "/v/" in str(p)]
    assert len(videos) == len(urls), videos  # the second run's files are purged
    for url in urls:
        assert (await glimpse.client.get(url, headers=headers)).status_code == 200


async def test_a_deleted_video_post_leaves_no_files(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    headers = await glimpse.signup()
    response = await glimpse.upload(
        headers, files=[("clip.mp4", clips["rotated"].path.read_bytes())]
    )
    post = await process(glimpse, headers, response)
    assert (
        await glimpse.client.delete(f"/api/v1/posts/{post['id']}", headers=headers)
    ).status_code == 204
    await glimpse.run_jobs()
    assert [p for p in glimpse.stored_files() if not p.name.isdigit()] == []


async def test_progress_is_shown_on_the_processing_post(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    async with glimpse.container.db.write() as session:
        media_id = (await session.execute(select(Media.id))).scalar_one()
        await service.record_progress(session, media_id, 42)
    shown = (
        await glimpse.client.get(f"/api/v1/posts/{response.json()['id']}", headers=headers)
    ).json()
    assert (shown["status"], shown["media"][0]["progress"]) == ("processing", 42)
    await glimpse.run_jobs()
    async with glimpse.container.db.write() as session:
        await service.record_progress(session, media_id, 77)  # a late report changes nothing
    done = (
        await glimpse.client.get(f"/api/v1/posts/{response.json()['id']}", headers=headers)
    ).json()
    assert done["status"] == "ready" and "progress" not in done["media"][0]


def test_transcoding_has_a_lane_of_its_own() -> None:
    # (Run alone, nothing else has imported the handlers yet: the module registers them.)
    assert registry.get(service.TRANSCODE_VIDEO_JOB).handler is posts_jobs.transcode_video
    assert registry.names(VIDEO_LANE) == {service.TRANSCODE_VIDEO_JOB}
    assert service.PROCESS_MEDIA_JOB in registry.names(DEFAULT_LANE)
    assert service.TRANSCODE_VIDEO_JOB not in registry.names(DEFAULT_LANE)


async def claim_soon(
    queue: JobConsumer, names: Collection[str], *, lease_seconds: float | None = None
) -> ClaimedJob | None:
    """The job a lane claims within a few seconds: a broker (RabbitMQ) delivers it a moment
    after it is committed, where the embedded queue has it at once."""
    deadline = time.monotonic() + 15
    while (job := await queue.claim(names, lease_seconds=lease_seconds)) is None:
        if time.monotonic() > deadline:
            return None
        await queue.wait_for_work(names, 0.2)
    return job


async def test_a_video_job_is_claimed_only_by_a_video_lane_under_its_longer_lease(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    headers = await glimpse.signup()
    # The video first: a photo lane must still take the photo, not wait behind it.
    await glimpse.upload(headers, files=[("clip.mp4", clips["rotated"].path.read_bytes())])
    await glimpse.upload(headers, files=[("photo.jpg", jpeg_bytes())])
    queue = glimpse.container.queue
    photo_job = await claim_soon(queue, registry.names(DEFAULT_LANE))
    assert photo_job is not None and photo_job.name == service.PROCESS_MEDIA_JOB
    assert await queue.claim(registry.names(DEFAULT_LANE)) is None  # the video is not theirs
    video_job = await claim_soon(queue, registry.names(VIDEO_LANE), lease_seconds=900)
    assert video_job is not None and video_job.name == service.TRANSCODE_VIDEO_JOB
    async with glimpse.container.db.read() as session:
        rows = await session.execute(text("select name, available_at from jobs"))
        leases = {name: available_at for name, available_at in rows}
    assert leases[service.TRANSCODE_VIDEO_JOB] - leases[service.PROCESS_MEDIA_JOB] > 600
    assert await queue.extend(video_job)


async def test_a_worker_s_video_lane_claims_under_the_video_lease(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's own lanes, not a claim made by hand: a transcode claimed under the photos'
    # short lease would be taken by another worker mid-way.
    from glimpse.media import decoding

    started, release = threading.Event(), threading.Event()

    def held(*args: object, **kwargs: object) -> object:
        started.set()
        release.wait(30)
        raise decoding.DecoderDied("stopped by the test")

    monkeypatch.setattr(decoding, "transcode_in_child", held)
    headers = await glimpse.signup()
    await glimpse.upload(headers, files=[("clip.mp4", clips["rotated"].path.read_bytes())])
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(glimpse.container, stop))
    try:
        async with asyncio.timeout(30):
            while not started.is_set():
                await asyncio.sleep(0.01)
        async with glimpse.container.db.read() as session:
            lease_until = (
                await session.execute(
                    text("select available_at from jobs where name = :name"),
                    {"name": service.TRANSCODE_VIDEO_JOB},
                )
            ).scalar_one()
        lease = glimpse.container.settings.video_job_lease_seconds
        assert (
            lease_until - time.time() > 0.9 * lease > glimpse.container.settings.job_lease_seconds
        )
    finally:
        release.set()
        stop.set()
        await worker


@pytest.mark.parametrize("settings", [{"video_worker_concurrency": 0}], indirect=True)
async def test_a_worker_with_no_video_lanes_leaves_videos_to_others(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GLIMPSE_VIDEO_WORKER_CONCURRENCY=0: this worker runs photos only (transcodes are left to
    # workers on other machines), and its photos go through.
    from glimpse.media import decoding

    transcodes: list[object] = []
    monkeypatch.setattr(decoding, "transcode_in_child", lambda *args: transcodes.append(args))
    headers = await glimpse.signup()
    video = await glimpse.upload(headers, files=[("clip.mp4", clips["rotated"].path.read_bytes())])
    photo = await glimpse.upload(headers)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(glimpse.container, stop))
    try:
        async with asyncio.timeout(60):  # (a bound on a hang, not a timing assertion)
            while (
                await glimpse.client.get(f"/api/v1/posts/{photo.json()['id']}", headers=headers)
            ).json()["status"] != "ready":
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # time enough for a video lane, were there one, to claim
    finally:
        stop.set()
        await worker
    assert transcodes == []
    async with glimpse.container.db.read() as session:
        state = (
            await session.execute(
                text("select state from jobs where name = :name"),
                {"name": service.TRANSCODE_VIDEO_JOB},
            )
        ).scalar_one()
    assert state == "queued"
    shown = await glimpse.client.get(f"/api/v1/posts/{video.json()['id']}", headers=headers)
    assert shown.json()["status"] == "processing"


async def test_a_transcode_stopped_by_its_budget_leaves_no_renditions_behind(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A child killed mid-transcode leaves what it wrote (hundreds of MB for a long video):
    # gone with the job, not an hour later with the sweep.
    from glimpse.media import decoding

    def killed(*args: Any) -> object:
        staging, prefix = args[2], args[7]
        (staging / f"{prefix}mp4_720.mp4").write_bytes(b"x" * 1000)
        raise decoding.DecodeBudgetExceeded("decoding took longer than 1 s")

    monkeypatch.setattr(decoding, "transcode_in_child", killed)
    headers = await glimpse.signup()
    response = await glimpse.upload(
        headers, files=[("clip.mp4", clips["rotated"].path.read_bytes())]
    )
    post = await process(glimpse, headers, response)
    assert post["status"] == "failed" and post["error"]["code"] == "video_too_complex"
    assert list(glimpse.container.storage.staging_dir().iterdir()) == []


async def test_a_transcode_child_that_died_is_tried_again(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crash (the kernel's OOM killer) may not recur: another attempt, not a failed post.
    from glimpse.media import decoding

    real, calls = decoding.transcode_in_child, []

    def dies_once(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise decoding.DecoderDied("killed")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(decoding, "transcode_in_child", dies_once)
    headers = await glimpse.signup()
    response = await glimpse.upload(
        headers, files=[("clip.mp4", clips["rotated"].path.read_bytes())]
    )
    post = await process(glimpse, headers, response)
    assert post["status"] == "ready" and len(calls) == 2


@pytest.mark.parametrize("settings", [{"story_ttl_seconds": 3600}], indirect=True)
async def test_a_highlight_publishes_a_reaped_video_story_again_with_the_same_files(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    clock = stories_tests.Clock(1_900_000_000.25)
    glimpse.container.clock = clock
    glimpse.container.media_urls = dataclasses.replace(glimpse.container.media_urls, clock=clock)
    ada, bob, _ = await stories_tests.three(glimpse)
    story = await stories_tests.post_story(glimpse, ada, clips["rotated"].path.read_bytes())
    shown = await stories_tests.get_story(glimpse, ada, story["id"])
    before = {(v["name"], urlsplit(v["url"]).path) for v in shown["media"]["variants"]}
    assert ("mp4_story", "video/mp4") in variants_of(shown["media"])
    clock.now = stories_tests._at(story["expires_at"]) + 60
    await stories_tests.reap(glimpse)
    assert [p for p in glimpse.stored_files() if "/v/" in str(p)] == []
    response = await glimpse.client.post(
        "/api/v1/me/highlights", headers=ada, json={"title": "Clip", "story_ids": [story["id"]]}
    )
    assert response.status_code == 201, response.text
    await glimpse.run_jobs()  # a transcode again, from the kept original
    highlight = (
        await glimpse.client.get(f"/api/v1/highlights/{response.json()['id']}", headers=bob)
    ).json()
    variants = highlight["stories"][0]["media"]["variants"]
    assert {(v["name"], urlsplit(v["url"]).path) for v in variants} == before
    for variant in variants:
        assert (await fetch(glimpse, variant["url"])).status_code == 200


@pytest.mark.parametrize("settings", [{"video_decode_timeout_seconds": 0.01}], indirect=True)
async def test_a_video_past_its_transcode_budget_fails_with_video_too_complex(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    post = await process(glimpse, headers, response)
    assert post["status"] == "failed"
    assert post["error"]["code"] == "video_too_complex"
    # (Its author reads the reason: a video is no "image".)
    assert "image" not in post["error"]["message"], post["error"]["message"]
    assert [p for p in glimpse.stored_files() if "/v/" in str(p)] == []
    assert [p.name for p in glimpse.container.storage.staging_dir().iterdir()] == []


@pytest.mark.parametrize("trouble", ["died", "unforeseen"])
async def test_the_checking_process_dying_is_503_and_leaves_nothing(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch, trouble: str
) -> None:
    from glimpse.media import decoding

    def died(*args: object) -> None:
        if trouble == "unforeseen":  # (an ImportError in a child, once: never a 500)
            raise RuntimeError("something no verdict names")
        raise decoding.DecoderDied("killed by the kernel")

    monkeypatch.setattr(decoding, "probe_video_in_child", died)
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
    await assert_nothing_written(glimpse)


async def test_a_transcode_clears_what_a_killed_earlier_run_of_it_left_in_staging(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    async with glimpse.container.db.read() as session:
        media_id = (await session.execute(select(Media.id))).scalar_one()
    staging = glimpse.container.storage.staging_dir()
    # What a run killed with its worker leaves: renditions, progress, a fetched original.
    left = [
        f"transcode-{media_id}-0f1e2d-mp4_720.mp4",
        f"progress-{media_id}-0f1e2d",
        f"original-{media_id}-0f1e2d",
    ]
    for name in left:
        (staging / name).write_bytes(b"x" * 1000)
    other = staging / f"transcode-{media_id}1-0f1e2d-mp4_720.mp4"  # another video's
    other.write_bytes(b"y")
    post = await process(glimpse, headers, response)
    assert post["status"] == "ready"
    assert [p.name for p in staging.iterdir()] == [other.name]
    other.unlink()


async def test_an_original_from_a_store_without_local_files_is_fetched_to_a_file(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stores other than the local disk hand the original over as a file in staging.
    monkeypatch.setattr(glimpse.container.storage, "local_path", lambda key: None)
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.webm", clips["vp9"].path.read_bytes())])
    post = await process(glimpse, headers, response)
    assert post["status"] == "ready"
    assert list(glimpse.container.storage.staging_dir().iterdir()) == []


async def test_the_percentage_the_child_writes_reaches_the_post(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from glimpse.posts import jobs

    monkeypatch.setattr(jobs, "PROGRESS_POLL_SECONDS", 0.01)
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    async with glimpse.container.db.read() as session:
        media_id = (await session.execute(select(Media.id))).scalar_one()
    progress = tmp_path / "progress"
    progress.write_text("37")  # as the transcoding child writes it

    async def transcode_until_the_author_sees_it() -> str:
        # Stands in for the transcode: it ends once the post shows what the child wrote.
        while True:
            post = await glimpse.client.get(
                f"/api/v1/posts/{response.json()['id']}", headers=headers
            )
            if post.json()["media"][0].get("progress") == 37:
                return "transcoded"
            await asyncio.sleep(0.01)

    async with asyncio.timeout(60):  # (a bound on a hang, not a timing assertion)
        done = await jobs._reporting_progress(
            glimpse.container, media_id, progress, transcode_until_the_author_sees_it()
        )
    assert done == "transcoded"


@pytest.mark.parametrize("settings", [{"video_job_lease_seconds": 3600.0}], indirect=True)
async def test_a_video_s_stored_files_are_guarded_for_the_video_lease(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    # A transcode runs under the video lease: a purge of its files that came due after the
    # photo lease would take them from under a run that is still alive and about to record them.
    from glimpse.backends.queue.models import Job
    from glimpse.posts.jobs import transcode_video

    headers = await glimpse.signup()
    await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    async with glimpse.container.db.read() as session:
        media_id = (await session.execute(select(Media.id))).scalar_one()
    before = time.time()
    await transcode_video(glimpse.container, {"media_id": media_id})
    after = time.time()
    async with glimpse.container.db.read() as session:
        guards = (
            (await session.execute(select(Job).where(Job.name == service.PURGE_KEYS_JOB)))
            .scalars()
            .all()
        )
    assert len(guards) == 1
    assert before + 3600 <= guards[0].available_at <= after + 3600


async def _report_progress(
    glimpse: Glimpse,
    clips: dict[str, Clip],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recorded: list[int],
) -> tuple[str, Media | None]:
    """Run the worker's progress reporting while a stand-in child writes 60, then 30 (a child
    that started over, or a write read out of order), then 80; `recorded` is filled by the
    test's stand-in for the database write."""
    from glimpse.posts import jobs

    monkeypatch.setattr(jobs, "PROGRESS_POLL_SECONDS", 0.01)
    headers = await glimpse.signup()
    await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    async with glimpse.container.db.read() as session:
        media_id = (await session.execute(select(Media.id))).scalar_one()
    progress = tmp_path / "progress"

    async def until_recorded(percent: int) -> None:
        while percent not in recorded:
            await asyncio.sleep(0.01)

    async def transcode() -> str:
        progress.write_text("60")
        await until_recorded(60)
        progress.write_text("30")
        await asyncio.sleep(0.2)  # many polls read the 30
        progress.write_text("80")
        await until_recorded(80)
        return "transcoded"

    async with asyncio.timeout(60):  # (a bound on a hang, not a timing assertion)
        done = await jobs._reporting_progress(glimpse.container, media_id, progress, transcode())
    async with glimpse.container.db.read() as session:
        media = await session.get(Media, media_id)
    return done, media


async def test_progress_never_goes_backwards(
    glimpse: Glimpse, clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = service.record_progress
    recorded: list[int] = []

    async def recording(session: Any, media_id: int, percent: int) -> None:
        await real(session, media_id, percent)
        recorded.append(percent)

    monkeypatch.setattr(service, "record_progress", recording)
    done, media = await _report_progress(glimpse, clips, tmp_path, monkeypatch, recorded)
    assert done == "transcoded"
    assert recorded == [60, 80]
    assert media is not None and media.progress == 80


async def test_a_progress_write_that_fails_does_not_fail_the_transcode(
    glimpse: Glimpse, clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = service.record_progress
    recorded: list[int] = []

    async def failing_first(session: Any, media_id: int, percent: int) -> None:
        recorded.append(percent)
        if len(recorded) == 1:
            raise ConnectionResetError("the database went away mid-write")
        await real(session, media_id, percent)

    monkeypatch.setattr(service, "record_progress", failing_first)
    done, media = await _report_progress(glimpse, clips, tmp_path, monkeypatch, recorded)
    assert done == "transcoded"
    assert media is not None and media.progress == 80


async def test_the_worker_holds_a_story_to_the_story_length_too(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    # Accepted by an upload under a longer limit (or by an API server whose settings differ
    # from the worker's): the transcode checks the story's length again, with the story limit.
    headers = await glimpse.signup()
    data = clips["h264"].path.read_bytes()  # 1 s
    response = await glimpse.client.post(
        "/api/v1/stories", headers=headers, files=[("file", ("s.mp4", data, "video/mp4"))]
    )
    assert response.status_code == 202, response.text
    glimpse.container.settings.max_story_video_seconds = 0.5
    await glimpse.run_jobs()
    story = (
        await glimpse.client.get(f"/api/v1/stories/{response.json()['id']}", headers=headers)
    ).json()
    assert story["status"] == "failed"
    assert story["error"]["code"] == "video_too_long"


async def test_a_large_file_s_range_is_streamed_in_chunks_to_its_last_byte(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A range that ends mid-file, streamed in chunks smaller than it and not dividing it: the
    # last chunk stops at the range's end, not a chunk's.
    from glimpse.media import origin

    monkeypatch.setattr(origin, "_SMALL_FILE", 1024)
    monkeypatch.setattr(origin, "_STREAM_CHUNK", 1000)
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    post = await process(glimpse, headers, response)
    url = variants_of(post["media"][0])["mp4_720", "video/mp4"]["url"]
    whole = (await fetch(glimpse, url)).content
    assert len(whole) > 8000
    for first, last in ((2000, 5500), (1, 7000), (0, len(whole) - 2)):
        part = await fetch(glimpse, url, Range=f"bytes={first}-{last}")
        assert part.status_code == 206
        assert part.content == whole[first : last + 1], (first, last)
        assert part.headers["content-range"] == f"bytes {first}-{last}/{len(whole)}"


@pytest.mark.local_disk  # (removes a file of the media folder by hand)
@pytest.mark.parametrize(
    "settings",
    [{"origin_cache_bytes": 2**20, "origin_cache_ttl_seconds": 3600}],
    indirect=True,
)
async def test_a_large_file_purged_after_it_was_looked_up_is_404(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The origin remembers a rendition's size; a purge that removed the file since is a 404,
    # never a 500 nor a response cut short.
    from glimpse.media import origin

    monkeypatch.setattr(origin, "_SMALL_FILE", 1024)
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    post = await process(glimpse, headers, response)
    url = variants_of(post["media"][0])["mp4_720", "video/mp4"]["url"]
    assert (await fetch(glimpse, url)).status_code == 200  # looked up, remembered
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    [path] = [p for p in glimpse.stored_files() if p.name == name]
    path.unlink()
    assert (await fetch(glimpse, url, Range="bytes=2000-")).status_code == 404
    assert (await fetch(glimpse, url)).status_code == 404


async def test_a_disk_fault_reading_the_original_is_tried_again_not_a_failed_post(
    glimpse: Glimpse, clips: dict[str, Clip], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the child meets reading the stored video (EIO: see test_video_transcode's
    # /proc/self/mem) comes back as OriginalUnreadable: the disk's fault, worth another try.
    import errno

    from glimpse.media import decoding

    real, calls = decoding.transcode_in_child, []

    def eio_once(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise decoding.OriginalUnreadable(errno.EIO, "Input/output error")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(decoding, "transcode_in_child", eio_once)
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    post = await process(glimpse, headers, response)
    assert post["status"] == "ready" and len(calls) == 2
