"""The video adapter against real clips (tests/clips.py): every rendition decodes, is H.264 High
+ AAC in yuv420p at the planned size, lasts as long as its source (within a frame), has its index
first, is turned upright, and carries no location; bad inputs are refused with their reason."""

from __future__ import annotations

import errno
import io
import mmap
import os
import resource
import shutil
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import pytest
from PIL import Image

from glimpse.media import decoding, video
from glimpse.media.sniff import MediaType
from glimpse.media.video_planning import STORY_VARIANT
from tests.clips import GREEN, Clip, declare_duration, make_clip, top_level_boxes
from tests.conftest import GPS_LOCATION

BUDGET = decoding.DecodeBudget(cpu_seconds=60, memory_bytes=2 * 2**30, timeout_seconds=120)


def transcode(clip: Clip, staging: Path, story: bool = False) -> video.ProcessedVideo:
    return video.transcode_video(clip.path, MediaType(clip.media_type), staging, story, 90.0)


def renditions(processed: video.ProcessedVideo) -> dict[str, video.VideoFile]:
    return {v.name: v for v in processed.variants if isinstance(v, video.VideoFile)}


def stills(processed: video.ProcessedVideo) -> dict[str, bytes]:
    return {
        v.content_type: v.data
        for v in processed.variants
        if not isinstance(v, video.VideoFile) and v.name == "poster"
    }


def check_rendition(rendition: video.VideoFile, source: Clip) -> None:
    data = rendition.path.read_bytes()
    boxes = top_level_boxes(data)
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # +faststart
    assert rendition.size == len(data)
    with av.open(str(rendition.path)) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context
        assert (codec.name, codec.profile, codec.pix_fmt) == ("h264", "High", "yuv420p")
        assert (codec.width, codec.height) == (rendition.width, rendition.height)
        assert rendition.width % 2 == 0 and rendition.height % 2 == 0
        assert [s.codec_context.name for s in container.streams.audio] == (
            ["aac"] if source.audio else []
        )
        frames = list(container.decode(stream))
        assert all(f.rotation == 0 for f in frames)  # applied, not left for players to apply
    assert stream.duration is not None and stream.time_base is not None
    seconds = float(stream.duration * stream.time_base)
    assert abs(seconds - source.seconds) <= 1 / source.fps + 1e-6, seconds
    assert len(frames) == round(source.seconds * source.fps)
    # Nothing that says where or when it was filmed, nor the source's own tags.
    assert GPS_LOCATION.encode() not in data and b"\xa9xyz" not in data
    assert b"Lavf" not in data


def test_h264_720p_gives_720_and_480_renditions_and_a_poster(
    clips: dict[str, Clip], tmp_path: Path
) -> None:
    clip = clips["h264"]
    processed = transcode(clip, tmp_path)
    found = renditions(processed)
    assert {name: (r.width, r.height) for name, r in found.items()} == {
        "mp4_720": (1280, 720),
        "mp4_480": (854, 480),
    }
    for rendition in found.values():
        check_rendition(rendition, clip)
    assert (processed.width, processed.height) == (1280, 720)
    # The last frame's end, not its start: 30 frames of 1/30 s last a second.
    assert processed.duration_s == pytest.approx(clip.seconds, abs=1e-3)
    posters = stills(processed)
    assert Image.open(io.BytesIO(posters["image/jpeg"])).format == "JPEG"
    assert Image.open(io.BytesIO(posters["image/webp"])).format == "WEBP"
    assert Image.open(io.BytesIO(posters["image/jpeg"])).size == (1280, 720)
    assert processed.blurhash and len(processed.blurhash) >= 6


def test_iphone_like_hevc_mov_loses_its_location(clips: dict[str, Clip], tmp_path: Path) -> None:
    clip = clips["hevc"]
    assert GPS_LOCATION.encode() in clip.path.read_bytes()  # (the source does carry it)
    processed = transcode(clip, tmp_path)
    for rendition in renditions(processed).values():
        check_rendition(rendition, clip)
        assert (rendition.width, rendition.height) == (320, 240)  # never upscaled
    for data in stills(processed).values():
        assert GPS_LOCATION.encode() not in data
        assert "exif" not in Image.open(io.BytesIO(data)).info


def test_vp9_webm_at_odd_dimensions_gives_even_ones(clips: dict[str, Clip], tmp_path: Path) -> None:
    clip = clips["vp9"]
    processed = transcode(clip, tmp_path)
    for rendition in renditions(processed).values():
        check_rendition(rendition, clip)
        assert (rendition.width, rendition.height) == (320, 240)


def test_a_rotated_silent_clip_is_turned_upright(clips: dict[str, Clip], tmp_path: Path) -> None:
    clip = clips["rotated"]
    processed = transcode(clip, tmp_path)
    found = renditions(processed)
    for rendition in found.values():
        check_rendition(rendition, clip)
        assert (rendition.width, rendition.height) == (240, 320)
    # Filmed with the green block top-left and turned 90 degrees counter-clockwise for
    # display (as FFmpeg's command line shows it): the block ends up bottom-left.
    poster = Image.open(io.BytesIO(stills(processed)["image/jpeg"])).convert("RGB")
    assert poster.size == (240, 320)
    assert _close(poster.getpixel((10, poster.height - 10)), GREEN)
    assert not _close(poster.getpixel((10, 10)), GREEN)


# Transcodes the clip named by argv[1] into the folder argv[2] and prints each rendition's hash.
_HASH_RENDITIONS = """
import hashlib, sys
from pathlib import Path
from glimpse.media import video
from glimpse.media.sniff import MediaType
made = video.transcode_video(Path(sys.argv[1]), MediaType.MP4, Path(sys.argv[2]), True, 90.0)
for v in made.variants:
    if isinstance(v, video.VideoFile):
        print(v.name, hashlib.sha256(v.path.read_bytes()).hexdigest())
"""


def test_renditions_do_not_depend_on_what_the_process_s_memory_held(
    clips: dict[str, Clip], tmp_path: Path
) -> None:
    # x264's AVX-512 code read memory it never wrote (a CI run made another mp4_720 of this
    # clip, and another key, the second time): glibc's MALLOC_PERTURB_ fills every block it
    # hands out and takes back, which made the 720 and 480 renditions differ on AVX-512 machines
    # (with 1; any machine without AVX-512 passes either way).
    made = []
    for perturb in ("0", "1"):
        out = tmp_path / perturb
        out.mkdir()
        env = {**os.environ, "MALLOC_PERTURB_": perturb}
        result = subprocess.run(
            [sys.executable, "-c", _HASH_RENDITIONS, str(clips["rotated"].path), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        made.append(result.stdout)
    assert made[0] == made[1]
    assert {line.split()[0] for line in made[0].splitlines()} == {
        "mp4_720",
        "mp4_480",
        STORY_VARIANT,
    }


def test_x264_keeps_to_what_it_detects_but_avx_512() -> None:
    flags = video.x264_asm_flags()
    assert flags is None or not flags & video._X264_CPU_AVX512


def test_a_clip_rotated_the_other_way_is_turned_upright(tmp_path: Path) -> None:
    # -90 (270): a phone held the other way round. The green block, top-left as filmed, ends
    # up top-right.
    clip = make_clip(tmp_path / "minus90.mp4", seconds=0.5, audio=False, rotation=-90)
    processed = transcode(clip, tmp_path)
    poster = Image.open(io.BytesIO(stills(processed)["image/jpeg"])).convert("RGB")
    assert poster.size == (240, 320)
    assert _close(poster.getpixel((poster.width - 10, 10)), GREEN)
    assert not _close(poster.getpixel((10, 10)), GREEN)


def test_a_clip_turned_half_way_round_is_shown_upright(tmp_path: Path) -> None:
    # 180 degrees: a phone held upside down. The green block, top-left as filmed, ends up
    # bottom-right: turned, not only mirrored one way.
    clip = make_clip(tmp_path / "upside-down.mp4", seconds=0.5, audio=False, rotation=180)
    processed = transcode(clip, tmp_path)
    for rendition in renditions(processed).values():
        check_rendition(rendition, clip)
        assert (rendition.width, rendition.height) == (320, 240)
    poster = Image.open(io.BytesIO(stills(processed)["image/jpeg"])).convert("RGB")
    assert _close(poster.getpixel((poster.width - 10, poster.height - 10)), GREEN)
    for corner in ((10, 10), (poster.width - 10, 10), (10, poster.height - 10)):
        assert not _close(poster.getpixel(corner), GREEN), corner


def test_a_display_matrix_of_all_zeros_is_no_rotation(tmp_path: Path) -> None:
    # A matrix of zeros names no angle (FFmpeg reads NaN): the picture is shown as stored,
    # not turned by whatever an undefined angle would come to.
    clip = make_clip(tmp_path / "rotated.mp4", seconds=0.5, audio=False, rotation=90)
    data = bytearray(clip.path.read_bytes())
    # tkhd (version 0): size, type, version+flags, two times, track id, reserved, duration,
    # 8 reserved, layer, group, volume, 2 reserved, then the 3x3 matrix (36 bytes) at 40.
    tkhd = data.find(b"tkhd") - 4
    assert data[tkhd + 40 : tkhd + 76] != bytes(36)
    data[tkhd + 40 : tkhd + 76] = bytes(36)
    path = tmp_path / "zeros.mp4"
    path.write_bytes(data)
    assert video.probe_video(path, MediaType.MP4).rotation == 0
    zeros = Clip(path, clip.media_type, 320, 240, 0.5, clip.fps, False)
    processed = transcode(zeros, tmp_path)
    poster = Image.open(io.BytesIO(stills(processed)["image/jpeg"])).convert("RGB")
    assert poster.size == (320, 240)
    assert _close(poster.getpixel((10, 10)), GREEN)


def test_the_worker_holds_a_story_to_its_9_by_16_minimum_too(tmp_path: Path) -> None:
    # 640x20 plays as a post; as a story its full-screen middle would be 10 px wide. The
    # upload's check refuses it; so does the transcode, should one ever get there.
    clip = make_clip(tmp_path / "strip.mp4", size=(640, 20), seconds=0.2, audio=False)
    (tmp_path / "post").mkdir()
    assert transcode(clip, tmp_path / "post")  # (a post: fine)
    with pytest.raises(video.VideoRefused) as refused:
        transcode(clip, tmp_path, story=True)
    assert refused.value.code == "video_too_small"


def test_the_worker_refuses_a_codec_glimpse_cannot_play(
    clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glimpse.media import video_planning

    monkeypatch.setattr(video_planning, "VIDEO_CODECS", frozenset({"vp9"}))
    with pytest.raises(video.VideoRefused) as refused:
        transcode(clips["h264"], tmp_path)
    assert refused.value.code == "unsupported_video_codec"
    assert list(tmp_path.iterdir()) == []


def test_a_story_gets_a_9_by_16_rendition(clips: dict[str, Clip], tmp_path: Path) -> None:
    clip = clips["h264"]
    processed = transcode(clip, tmp_path, story=True)
    story = renditions(processed)[STORY_VARIANT]
    check_rendition(story, clip)
    assert (story.width, story.height) == (404, 718)  # 9:16 of the 720-high frame, not upscaled
    # The middle of the frame: the green block in the corner (320 px of 1280) is cut away, and
    # the red bar, whose left end is at the frame's left edge, reaches past the crop's left.
    with av.open(str(story.path)) as container:
        first = next(container.decode(video=0)).to_image()
    assert not _close(first.getpixel((5, 5)), GREEN)
    # The record of the video is mp4_720's size, not the story rendition's.
    assert (processed.width, processed.height) == (1280, 720)


def test_the_decoding_child_transcodes_and_reports_progress(
    clips: dict[str, Clip], tmp_path: Path
) -> None:
    clip = clips["h264"]
    progress = tmp_path / "progress"
    processed = decoding.transcode_in_child(
        clip.path, MediaType.MP4, tmp_path, False, 90.0, BUDGET, progress
    )
    assert {r.name for r in renditions(processed).values()} == {"mp4_720", "mp4_480"}
    assert 0 <= int(progress.read_text()) < 100


def test_an_mp4_header_followed_by_junk_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "junk.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 40)
    with pytest.raises(video.UnreadableVideo):
        video.probe_video(path, MediaType.MP4)
    with pytest.raises(video.UnreadableVideo):
        decoding.probe_video_in_child(path, MediaType.MP4, BUDGET)


def test_a_10_hour_video_declared_in_the_header_is_refused_before_decoding(
    clips: dict[str, Clip], tmp_path: Path
) -> None:
    path = tmp_path / "long.mp4"
    path.write_bytes(declare_duration(clips["h264"].path.read_bytes(), 10 * 3600))
    assert video.probe_video(path, MediaType.MP4).duration_s == pytest.approx(36_000, rel=0.01)
    with pytest.raises(video.VideoRefused) as refused:
        video.transcode_video(path, MediaType.MP4, tmp_path, False, 90.0)
    assert refused.value.code == "video_too_long"
    assert list(tmp_path.glob("transcode-*")) == []  # nothing left behind


def test_decoding_stops_at_the_limit_whatever_the_header_says(
    clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A header that understates the length passes the check made from it; decoding must stop
    # at the limit all the same, and leave no half-written rendition behind.
    monkeypatch.setattr(video, "check_limits", lambda probe, max_seconds, story: None)
    monkeypatch.setattr(video, "_DURATION_SLACK_S", 0.0)
    with pytest.raises(video.VideoRefused) as refused:
        video.transcode_video(clips["h264"].path, MediaType.MP4, tmp_path, False, 0.25)
    assert refused.value.code == "video_too_long"
    assert list(tmp_path.glob("transcode-*")) == []


def test_decoding_stops_past_the_frames_the_limits_allow(
    clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Frames whose times claim nothing (thousands at one instant) are counted all the same: here
    # a limit of 4 frames a second of a 0.25 s video, against a clip of many more frames.
    monkeypatch.setattr(video, "check_limits", lambda probe, max_seconds, story: None)
    monkeypatch.setattr(video, "MAX_FRAME_RATE", 4.0)
    with pytest.raises(video.VideoRefused) as refused:
        video.transcode_video(clips["h264"].path, MediaType.MP4, tmp_path, False, 0.25)
    assert refused.value.code == "video_too_complex"
    assert list(tmp_path.glob("transcode-*")) == []


def _vp8_key_and_inter_frame() -> tuple[bytes, bytes]:
    """One small VP8 keyframe and an inter frame that changes nothing, at 64x64."""
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 64, 64, "yuv420p"
    encoder.time_base = Fraction(1, 1000)
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    packets = []
    for i in range(3):
        frame = av.VideoFrame(64, 64, "yuv420p")
        frame.pts = i
        packets += list(encoder.encode(frame))
    packets += list(encoder.encode(None))
    return bytes(packets[0]), bytes(packets[1])


def _vp8_webm(path: Path, frames: list[tuple[bytes, int, int]]) -> None:
    """A WebM of VP8 frames given as (data, pts, duration) in milliseconds."""
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libvpx", rate=120)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for i, (data, pts, duration) in enumerate(frames):
            packet = av.Packet(data)
            packet.stream, packet.time_base = stream, stream.time_base
            packet.pts = packet.dts = pts
            packet.duration = duration
            packet.is_keyframe = i == 0
            out.mux(packet)


def _frames_at_one_instant(path: Path, frames: int) -> None:
    """A keyframe and `frames` - 1 copies of an inter frame, every one stamped at t=0: tiny to
    send, a frame to decode each (the outside attack run's decode bomb, at 64x64)."""
    key, inter = _vp8_key_and_inter_frame()
    _vp8_webm(path, [(key if i == 0 else inter, 0, 0) for i in range(frames)])


def test_a_last_frame_shown_past_the_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two frames, the second starting at 0.1 s and shown for 200 s: every frame starts within
    # the limit, but the video lasts far past it (and its header passes the upload's check here).
    key, inter = _vp8_key_and_inter_frame()
    path = tmp_path / "long-last-frame.webm"
    _vp8_webm(path, [(key, 0, 100), (inter, 100, 200_000)])
    monkeypatch.setattr(video, "check_limits", lambda probe, max_seconds, story: None)
    with pytest.raises(video.VideoRefused) as refused:
        video.transcode_video(path, MediaType.WEBM, tmp_path, False, 5.0)
    assert refused.value.code == "video_too_long"
    assert list(tmp_path.glob("transcode-*")) == []


def test_a_file_without_a_picture_in_its_first_packets_is_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Packets that decode to no picture (here keyframes whose header says "do not show": bit 4
    # of a VP8 frame's first byte) are read only so far before the upload's check gives up.
    key, _ = _vp8_key_and_inter_frame()
    hidden = bytes([key[0] & ~0x10]) + key[1:]
    path = tmp_path / "no-picture-first.webm"
    _vp8_webm(path, [(hidden, i, 1) for i in range(40)] + [(key, 40, 1)])
    assert video.probe_video(path, MediaType.WEBM).width == 64  # within the default cap
    monkeypatch.setattr(video, "PROBE_MAX_PACKETS", 20)
    with pytest.raises(video.UnreadableVideo, match="first 20 packets"):
        video.probe_video(path, MediaType.WEBM)


def test_frames_that_never_move_time_forward_are_refused_early(tmp_path: Path) -> None:
    path = tmp_path / "bomb.webm"
    _frames_at_one_instant(path, 500)
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(video.VideoRefused) as refused:
        video.transcode_video(path, MediaType.WEBM, staging, False, 90.0)
    assert refused.value.code == "video_too_complex"
    assert list(staging.glob("transcode-*")) == []


def test_a_frame_larger_than_4k_is_refused_whatever_came_first(
    clips: dict[str, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The upload's check sees the first frame only; every decoded frame is held to the limit.
    monkeypatch.setattr(video, "MAX_SHORT_SIDE", 8)
    with pytest.raises(video.VideoRefused) as refused:
        video.transcode_video(clips["h264"].path, MediaType.MP4, tmp_path, False, 90.0)
    assert refused.value.code == "too_many_pixels"
    assert list(tmp_path.glob("transcode-*")) == []


def _close(pixel: object, colour: tuple[int, int, int]) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) < 40 for a, b in zip(pixel, colour, strict=False))


def test_a_refusal_in_the_decoding_child_reaches_the_worker_as_itself(
    tmp_path: Path,
) -> None:
    # The refusal crosses the process boundary by pickle: it must arrive as VideoRefused with
    # its code, not as an error that reads as a passing fault and is retried.
    key, inter = _vp8_key_and_inter_frame()
    path = tmp_path / "long-last-frame.webm"
    _vp8_webm(path, [(key, 0, 100), (inter, 100, 200_000)])
    budget = decoding.DecodeBudget(cpu_seconds=60, memory_bytes=2**31, timeout_seconds=60)
    with pytest.raises(video.VideoRefused) as refused:
        # (The header says 200 s: refused by the check from it, inside the child.)
        decoding.transcode_in_child(path, MediaType.WEBM, tmp_path, False, 5.0, budget)
    assert refused.value.code == "video_too_long" and "5 seconds" in refused.value.message


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root"
)
def test_a_full_disk_while_writing_renditions_is_the_machines_fault(
    clips: dict[str, Clip], tmp_path: Path
) -> None:
    # Renditions do not fit in 8 KB: writing it fails with ENOSPC, which must leave as
    # an OSError (the worker tries again once there is room), not as an unreadable video (the
    # post would fail for good); and what was written is removed.
    staging = tmp_path / "small"
    staging.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(staging)], check=True)
    try:
        with pytest.raises(decoding.OriginalUnreadable) as raised:
            decoding.transcode_in_child(
                clips["h264"].path, MediaType.MP4, staging, False, 90.0, BUDGET
            )
        assert raised.value.errno == errno.ENOSPC
        assert list(staging.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(staging)], check=False)


@pytest.mark.parametrize("room_mb", [1, 4])
def test_ffmpeg_out_of_memory_is_the_budget_not_a_damaged_video(
    tmp_path: Path, room_mb: int
) -> None:
    # FFmpeg finds too little room under the child's budget to decode a 4K frame: that is the
    # budget running out (the child is replaced), not the file being damaged.
    clip = make_clip(tmp_path / "big.mp4", size=(3840, 2160), seconds=0.1, audio=False)
    decoding.shutdown()  # a fresh child: a used one has freed heap to decode into
    with pytest.raises(decoding.DecodeBudgetExceeded):
        decoding.run_in_child(BUDGET, probe_with_little_room, clip.path, room_mb * 2**20)


def probe_with_little_room(path: Path, room: int) -> object:
    """video.probe_video, in a child whose budget leaves `room` bytes of address space."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    _held.append(mmap.mmap(-1, limit - decoding._memory_bytes()[0] - room))
    return video.probe_video(path, MediaType.MP4)


_held: list[mmap.mmap] = []


@pytest.mark.parametrize("room_mb", [32, 48])
def test_the_encoder_out_of_memory_is_the_budget_not_a_damaged_video(
    tmp_path: Path, room_mb: int
) -> None:
    # x264 reports a malloc that failed under the child's budget as a generic external error,
    # not ENOMEM: a server whose video budget was set low failed every video as "damaged"
    # (undecodable_video, the file blamed, for good) instead of too complex.
    clip = make_clip(tmp_path / "small.mp4", size=(320, 240), seconds=0.5)
    staging = tmp_path / "staging"
    staging.mkdir()
    decoding.shutdown()  # a fresh child, as above
    with pytest.raises(decoding.DecodeBudgetExceeded):
        decoding.run_in_child(
            BUDGET, transcode_with_little_room, clip.path, staging, room_mb * 2**20
        )
    assert list(staging.iterdir()) == []


def transcode_with_little_room(path: Path, staging: Path, room: int) -> object:
    """video.transcode_video, in a child whose budget leaves `room` bytes of address space:
    enough to decode a small clip, not enough for x264's buffers."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    _held.append(mmap.mmap(-1, limit - decoding._memory_bytes()[0] - room))
    return video.transcode_video(path, MediaType.MP4, staging, False, 90.0)


def test_the_poster_is_taken_a_third_of_the_way_in_and_progress_is_reported(
    tmp_path: Path,
) -> None:
    # The clip's red bar grows 7 px a frame from nothing: the first frame has none, the frame a
    # second in (a third of 3 s) is red 210 px across.
    clip = make_clip(tmp_path / "three.mp4", seconds=3.0, audio=False)
    progress = tmp_path / "progress"
    staging = tmp_path / "staging"
    staging.mkdir()
    processed = video.transcode_video(clip.path, MediaType.MP4, staging, False, 90.0, progress)
    poster = Image.open(io.BytesIO(stills(processed)["image/jpeg"])).convert("RGB")
    red, _, blue = poster.getpixel((150, 180))  # type: ignore[misc]
    assert red > 150 and blue < 100, poster.getpixel((150, 180))
    # ... and no further: the first frame at that moment, not a later one (the last frame's bar
    # reaches 303 px).
    red, _, _ = poster.getpixel((260, 180))  # type: ignore[misc]
    assert red < 100, poster.getpixel((260, 180))
    # Written each second of video: 66% at two seconds in, the last before the end.
    assert int(progress.read_text()) >= 60


def test_a_read_that_fails_while_opening_the_video_is_the_disk_s_fault() -> None:
    # Reading /proc/self/mem from its start fails with EIO, as a failing disk's sectors do.
    # FFmpeg calls that invalid data; the worker must hear of a disk fault (and try again),
    # not of an undecodable video (and fail the post for good).
    for media_type in (MediaType.WEBM, MediaType.MP4):
        with pytest.raises(decoding.OriginalUnreadable) as raised:
            decoding.probe_video_in_child(Path("/proc/self/mem"), media_type, BUDGET)
        assert raised.value.errno == errno.EIO


def _span(path: Path, kind: str) -> tuple[float, float]:
    """When the rendition's first frame of `kind` starts and its last one ends, in seconds."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
        times = [
            (float(f.pts * f.time_base), float((f.duration or 0) * f.time_base))
            for f in container.decode(stream)
        ]
    start = times[0][0]
    if kind == "audio":
        end = max(t + d for t, d in times) if times[-1][1] else times[-1][0]
    else:
        end = times[-1][0]
    return start, end


def test_sound_that_starts_late_starts_late_in_the_renditions(tmp_path: Path) -> None:
    # Half a second of picture before any sound: the sound must not be pulled to the start
    # (out of step with the picture by half a second).
    clip = make_clip(tmp_path / "late.mp4", seconds=1.0, audio_start_s=0.5)
    rendition = renditions(transcode(clip, tmp_path))["mp4_720"]
    audio_start, audio_end = _span(rendition.path, "audio")
    assert 0.45 <= audio_start <= 0.55, audio_start
    assert 1.4 <= audio_end <= 1.6, audio_end
    assert _span(rendition.path, "video")[0] == 0.0


def test_an_edit_list_lead_in_and_the_sound_under_it_are_cut(tmp_path: Path) -> None:
    # The first picture is shown at 0.5 s (an edit list; phones write such lead-ins): the
    # output starts with it, and the half second of sound before it is cut, so sound and
    # picture stay in step.
    clip = make_clip(tmp_path / "lead.mp4", seconds=1.0, video_start_s=0.5)
    processed = transcode(clip, tmp_path)
    rendition = renditions(processed)["mp4_720"]
    video_start, video_end = _span(rendition.path, "video")
    assert video_start == 0.0
    assert 0.9 <= video_end <= 1.0, video_end  # 30 frames of a second, from 0
    audio_start, audio_end = _span(rendition.path, "audio")
    assert audio_start <= 0.05, audio_start
    assert 0.4 <= audio_end <= 0.6, audio_end  # the sound's last half second
    assert 0.9 <= processed.duration_s <= 1.1, processed.duration_s


def test_a_negative_declared_duration_counts_as_none(tmp_path: Path) -> None:
    # A WebM whose header says it lasts -5 s: the length is never below zero (no limit or
    # progress figure is computed from a negative one), and the pictures decide.
    clip = make_clip(
        tmp_path / "clip.webm", container="webm", codec="libvpx-vp9", audio=False, seconds=0.3
    )
    data = bytearray(clip.path.read_bytes())
    duration = data.find(b"\x44\x89\x88")  # Segment Info's Duration: an 8-byte float
    assert duration != -1
    data[duration + 3 : duration + 11] = struct.pack(">d", -5000.0)  # (in milliseconds)
    path = tmp_path / "negative.webm"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        assert container.duration is not None and container.duration < 0
    assert video.probe_video(path, MediaType.WEBM).duration_s == 0.0
    negative = Clip(path, clip.media_type, 320, 240, 0.3, clip.fps, False)
    rendition = renditions(transcode(negative, tmp_path))["mp4_720"]
    assert 0.2 <= _span(rendition.path, "video")[1] <= 0.3


def test_a_120_fps_clip_as_long_as_the_limit_keeps_every_other_frame(tmp_path: Path) -> None:
    # Slow motion filmed at 120 fps, exactly as long as the limit: accepted (its frames are
    # within what the limits allow), and encoded at 60 frames a second.
    clip = make_clip(tmp_path / "slow.mp4", size=(64, 64), seconds=2.5, fps=120, audio=False)
    processed = video.transcode_video(clip.path, MediaType.MP4, tmp_path, False, 2.5)
    for rendition in renditions(processed).values():
        with av.open(str(rendition.path)) as container:
            stream = container.streams.video[0]
            assert stream.average_rate == 60
            assert len(list(container.decode(stream))) == 150
    assert abs(processed.duration_s - 2.5) <= 1 / 60


def _noise_clip(path: Path, size: tuple[int, int], seconds: float) -> None:
    """Random pixels and random sound: what no encoder can squeeze, so only the caps hold the
    renditions' bitrates down."""
    width, height = size
    fps = 30
    with av.open(str(path), "w", format="mp4") as output:
        picture = output.add_stream(
            "libx264", rate=fps, options={"crf": "18", "preset": "ultrafast"}
        )
        picture.width, picture.height, picture.pix_fmt = width, height, "yuv420p"
        sound = output.add_stream("aac", rate=48000)
        for index in range(round(seconds * fps)):
            frame = av.VideoFrame.from_image(
                Image.frombytes("RGB", size, os.urandom(width * height * 3))
            )
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in picture.encode(frame):
                output.mux(packet)
        for packet in picture.encode(None):
            output.mux(packet)
        for start in range(0, round(seconds * 48000), 1024):
            chunk = av.AudioFrame(format="s16", layout="mono", samples=1024)
            chunk.planes[0].update(os.urandom(2048))
            chunk.sample_rate, chunk.pts = 48000, start
            for packet in sound.encode(chunk):
                output.mux(packet)
        for packet in sound.encode(None):
            output.mux(packet)


def test_renditions_keep_to_their_bitrate_caps_and_sound_is_aac_48k_stereo(
    tmp_path: Path,
) -> None:
    # Noise at CRF 23 alone would take some 20 Mb/s here. Under a cap of R bits a second with a
    # buffer of B bits, a clip of d seconds holds at most R * d + B bits of picture; the sound is
    # 48 kHz stereo at 128 / 96 kb/s (API.md).
    path = tmp_path / "noise.mp4"
    _noise_clip(path, (640, 360), 0.5)
    staging = tmp_path / "staging"
    staging.mkdir()
    processed = video.transcode_video(path, MediaType.MP4, staging, False, 90.0)
    caps = {"mp4_720": (2_500_000, 128_000), "mp4_480": (1_200_000, 96_000)}
    for name, rendition in renditions(processed).items():
        picture_cap, sound_rate = caps[name]
        with av.open(str(rendition.path)) as container:
            stream = container.streams.video[0]
            seconds = float(stream.duration * stream.time_base)
            picture_bits = 8 * sum(p.size for p in container.demux(stream))
        assert picture_bits <= picture_cap * seconds + 2 * picture_cap, (name, picture_bits)
        with av.open(str(rendition.path)) as container:
            sound = container.streams.audio[0]
            codec = sound.codec_context
            assert (codec.name, codec.sample_rate, codec.layout.name) == ("aac", 48000, "stereo")
            sound_bits = 8 * sum(p.size for p in container.demux(sound))
            sound_seconds = float(sound.duration * sound.time_base)
        assert abs(sound_bits / sound_seconds - sound_rate) <= 0.15 * sound_rate, (name, sound_bits)


def test_a_story_of_non_square_pixels_is_cropped_from_what_is_shown(tmp_path: Path) -> None:
    # Stored 160x240 with pixels twice as wide as tall: shown 320x240. The story's 9:16 middle
    # is taken from the frame as shown (134x240 from x = 93), not from the stored one (where
    # that box would not even fit), and its pixels are square.
    clip = make_clip(
        tmp_path / "anamorphic.mp4",
        size=(160, 240),
        seconds=0.3,
        audio=False,
        pixel_aspect=Fraction(2, 1),
    )
    processed = transcode(clip, tmp_path, story=True)
    found = renditions(processed)
    assert (found[STORY_VARIANT].width, found[STORY_VARIANT].height) == (134, 238)
    assert (found["mp4_720"].width, found["mp4_720"].height) == (320, 240)
    with av.open(str(found[STORY_VARIANT].path)) as container:
        stream = container.streams.video[0]
        assert stream.sample_aspect_ratio in (None, 1)
        first = next(container.decode(stream)).to_image()
    # The green block (the left quarter of the frame as shown) is outside the middle.
    assert not _close(first.getpixel((5, 5)), GREEN)
