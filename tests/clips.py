"""Short video clips made with PyAV for the tests: tiny, and made once per session (see the
`clips` fixture in conftest.py), so that the video tests stay fast.

Every clip shows the same scene: black, a red bar sweeping left to right, and a green block in
the top-left corner of the picture as filmed, so a test can tell which way up an output is.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, ImageDraw

GREEN = (0, 255, 0)


@dataclass(frozen=True)
class Clip:
    """How a clip was made: what its outputs are checked against."""

    path: Path
    media_type: str
    width: int
    height: int
    seconds: float
    fps: int
    audio: bool
    rotation: int = 0


def make_clip(
    path: Path,
    *,
    container: str = "mp4",
    codec: str = "libx264",
    size: tuple[int, int] = (320, 240),
    seconds: float = 1.0,
    fps: int = 30,
    audio: bool = True,
    rotation: int = 0,
    pix_fmt: str = "yuv420p",
    metadata: dict[str, str] | None = None,
    video_start_s: float = 0.0,
    audio_start_s: float = 0.0,
    pixel_aspect: Fraction | None = None,
) -> Clip:
    """`video_start_s` and `audio_start_s` delay each stream's first frame (the MP4 muxer writes
    an edit list for a video that starts late); `pixel_aspect` makes its pixels non-square."""
    width, height = size
    options = {"x265-params": "log-level=error"} if codec == "libx265" else {}
    with av.open(str(path), "w", format=container) as output:
        if metadata:
            output.metadata.update(metadata)
        video = output.add_stream(codec, rate=fps, options=options)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        if pixel_aspect is not None:
            video.codec_context.sample_aspect_ratio = pixel_aspect
        if rotation:
            video.set_display_rotation(rotation)
        sound = None
        if audio:
            sound = output.add_stream("libopus" if container == "webm" else "aac", rate=48000)
        for index in range(round(seconds * fps)):
            picture = Image.new("RGB", size, (0, 0, 0))
            draw = ImageDraw.Draw(picture)
            draw.rectangle([0, height // 4, index * 7 % width, height - 1], fill=(200, 40, 40))
            draw.rectangle([0, 0, width // 4, height // 4], fill=GREEN)
            frame = av.VideoFrame.from_image(picture).reformat(format=pix_fmt)
            frame.pts = index + round(video_start_s * fps)
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                output.mux(packet)
        for packet in video.encode(None):
            output.mux(packet)
        if sound is not None:
            _write_tone(output, sound, seconds, 960 if container == "webm" else 1024, audio_start_s)
    media_type = {"mp4": "video/mp4", "mov": "video/quicktime", "webm": "video/webm"}[container]
    return Clip(path, media_type, width, height, seconds, fps, audio, rotation)


def _write_tone(
    output: av.container.OutputContainer,
    stream: object,
    seconds: float,
    step: int,
    start_s: float = 0.0,
) -> None:
    total = round(seconds * 48000)
    for start in range(0, total, step):
        frame = av.AudioFrame(format="s16", layout="mono", samples=step)
        samples = (
            int(6000 * math.sin(2 * math.pi * 440 * (start + k) / 48000)) for k in range(step)
        )
        frame.planes[0].update(struct.pack(f"<{step}h", *samples))
        frame.sample_rate, frame.pts = 48000, start + round(start_s * 48000)
        for packet in stream.encode(frame):  # type: ignore[attr-defined]
            output.mux(packet)
    for packet in stream.encode(None):  # type: ignore[attr-defined]
        output.mux(packet)


def declare_duration(data: bytes, seconds: int) -> bytes:
    """The MP4 with every duration its header declares (the movie's, each track's and each
    media's) set to `seconds`: a 10-hour video as far as the header goes, in a few KB."""
    out = bytearray(data)
    movie = out.find(b"mvhd") - 4
    movie_scale = int.from_bytes(out[movie + 20 : movie + 24], "big")
    # Version 0 boxes (32-bit times, what clips this small get): after size, type and
    # version+flags come creation and modification times, then mvhd and mdhd have their
    # timescale and duration, tkhd a track id, 4 reserved bytes and its duration (in the
    # movie's timescale).
    # (An edit list's first entry starts with its duration, in the movie's timescale.)
    for box, duration_at in ((b"mvhd", 24), (b"mdhd", 24), (b"tkhd", 28), (b"elst", 16)):
        start = 0
        while (found := out.find(box, start)) != -1:
            start = found + 4
            base = found - 4
            assert out[base + 8] == 0, "a version 1 box"
            scale = (
                movie_scale
                if box in (b"tkhd", b"elst")
                else int.from_bytes(out[base + 20 : base + 24], "big")
            )
            out[base + duration_at : base + duration_at + 4] = (seconds * scale).to_bytes(4, "big")
    # FFmpeg trusts the sample table over those: each track's samples are made to last as long.
    media_scales = []
    start = 0
    while (found := out.find(b"mdhd", start)) != -1:
        start = found + 4
        media_scales.append(int.from_bytes(out[found + 16 : found + 20], "big"))
    start = 0
    for scale in media_scales:
        found = out.find(b"stts", start)
        start = found + 4
        base = found - 4
        assert int.from_bytes(out[base + 12 : base + 16], "big") == 1, "one run of samples"
        count = int.from_bytes(out[base + 16 : base + 20], "big")
        out[base + 20 : base + 24] = (seconds * scale // count).to_bytes(4, "big")
    return bytes(out)


def top_level_boxes(data: bytes) -> list[str]:
    """The MP4's top-level box types, in file order (faststart: `moov` before `mdat`)."""
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        boxes.append(kind)
        if size < 8:
            break
        offset += size
    return boxes
