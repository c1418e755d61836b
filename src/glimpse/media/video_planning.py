"""Video planning: what a probed video may be, and what is made of it, as plain functions.

The video adapter (media/video.py) only measures and applies: the limits, the upright size, the
variants' sizes and bitrates, the story's crop, the poster's moment and the frames kept of a
high-frame-rate clip are all decided here, over numbers, and unit-tested without a codec.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

# API.md: at most 4K either way round, and 120 frames a second.
MAX_LONG_SIDE = 3840
MAX_SHORT_SIDE = 2160
MAX_FRAME_RATE = 120.0
# The smallest frame a rendition can be made from without upscaling: H.264 in 4:2:0 codes
# 16x16 macroblocks, and a tinier source (a 1x1 "video") would have to be blown up to be played.
MIN_SIDE = 16
# What the decoders and the H.264 encoder of the pipeline accept. Anything else (ProRes RAW,
# codecs of old camcorders) is refused at upload, not after a minute of work.
VIDEO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4"})
AUDIO_CODECS = frozenset(
    {"aac", "mp3", "opus", "vorbis", "alac", "ac3", "eac3", "flac"}
) | frozenset(f"pcm_{kind}" for kind in ("s16le", "s16be", "s24le", "s24be", "f32le", "f32be"))
# A phone's slow motion is filmed at 120 or 240 fps and played at 30; browsers gain nothing
# from more than 60 frames a second, and each costs encoding time.
OUTPUT_MAX_FRAME_RATE = 60.0

STORY_VARIANT = "mp4_story"
POSTER_VARIANT = "poster"


@dataclass(frozen=True)
class VideoProbe:
    """What a video's container and first frame say (sizes as stored, before rotation)."""

    container: str
    video_codec: str
    width: int
    height: int
    # Counter-clockwise degrees the display matrix turns the picture by (ffprobe's `rotation`).
    rotation: int
    frame_rate: float
    duration_s: float
    audio_codec: str | None
    # Width of a sample over its height (1 for square pixels, which is what phones film).
    pixel_aspect: Fraction = Fraction(1)
    # When the first frame is shown (an edit list may hide a lead-in before it).
    start_s: float = 0.0


@dataclass(frozen=True)
class LimitBreach:
    """Why a video is refused: an API error code and a sentence for its author. `too_large`
    says which kind of refusal it is: past a maximum (413) or short of a minimum (422)."""

    code: str
    message: str
    too_large: bool = True


@dataclass(frozen=True)
class VideoVariantPlan:
    """One H.264 + AAC rendition: its frame size, and the caps its encoder is held to."""

    name: str
    width: int
    height: int
    max_bitrate: int  # bits a second, video only
    buffer_bits: int  # the VBV buffer: how far the bitrate may swing around the cap
    audio_bitrate: int
    # The centre crop, in upright source pixels, taken before scaling (None: the whole frame).
    crop: tuple[int, int, int, int] | None = None


# Shorter side, video bitrate cap, audio bitrate. 720p at 2.5 Mb/s and 480p at 1.2 Mb/s are
# what the large sharing sites serve phones; CRF keeps simple scenes far below the caps.
_VARIANTS = (("mp4_720", 720, 2_500_000, 128_000), ("mp4_480", 480, 1_200_000, 96_000))
# The story's full-screen rendition: 9:16, 720 wide at most, under the 720p cap.
STORY_WIDTH = 720
STORY_ASPECT = Fraction(9, 16)
CRF = 23
X264_PRESET = "veryfast"


def check_limits(probe: VideoProbe, max_seconds: float, story: bool = False) -> LimitBreach | None:
    """The first limit of API.md the video passes, or None when it is within them all. Sizes
    are held to the limits both as stored and as shown (pixels 100 times wider than tall
    would make a 3840x2160 frame of a 38 px wide stream); a story's 9:16 crop as well."""
    shown_width, shown_height = upright_size(probe)
    sizes = [(probe.width, probe.height), (shown_width, shown_height)]
    if any(max(w, h) > MAX_LONG_SIDE or min(w, h) > MAX_SHORT_SIDE for w, h in sizes):
        return LimitBreach(
            "too_many_pixels",
            f"A video may be at most {MAX_LONG_SIDE}x{MAX_SHORT_SIDE} (4K); this one is"
            f" {shown_width}x{shown_height}.",
        )
    if story:
        sizes.append(story_crop(shown_width, shown_height)[2:])
    if any(min(w, h) < MIN_SIDE for w, h in sizes):
        what = "A story video's 9:16 middle" if story else "A video"
        return LimitBreach(
            "video_too_small",
            f"{what} must be at least {MIN_SIDE}x{MIN_SIDE} pixels; this one is"
            f" {shown_width}x{shown_height}.",
            too_large=False,
        )
    if probe.frame_rate > MAX_FRAME_RATE:
        return LimitBreach(
            "frame_rate_too_high",
            f"A video may have at most {MAX_FRAME_RATE:g} frames a second; this one has"
            f" {probe.frame_rate:.0f}.",
        )
    if probe.duration_s > max_seconds:
        return LimitBreach(
            "video_too_long",
            f"A video here may be at most {max_seconds:g} seconds long; this one is"
            f" {probe.duration_s:.0f}.",
        )
    return None


def unsupported_codec(probe: VideoProbe) -> str | None:
    """The codec Glimpse cannot transcode, described for the author, or None."""
    if probe.video_codec not in VIDEO_CODECS:
        return f"video encoded as {probe.video_codec}"
    if probe.audio_codec is not None and probe.audio_codec not in AUDIO_CODECS:
        return f"sound encoded as {probe.audio_codec}"
    return None


def quarter_turns(rotation: int) -> int:
    """The display rotation as counter-clockwise quarter turns, 0..3 (phones only ever write
    multiples of 90; anything in between is rounded to the nearest)."""
    return round(rotation / 90) % 4


def upright_size(probe: VideoProbe) -> tuple[int, int]:
    """The frame as it is shown: square pixels, turned by the display matrix."""
    width = round(probe.width * probe.pixel_aspect) if probe.pixel_aspect > 0 else probe.width
    height = probe.height
    if quarter_turns(probe.rotation) % 2:
        width, height = height, width
    return max(1, width), max(1, height)


def _even(value: float | Fraction) -> int:
    """Down to an even number, at least 2 (4:2:0 chroma covers pixels two by two)."""
    return max(2, int(value) // 2 * 2)


def scaled_to_shorter_side(width: int, height: int, shorter: int) -> tuple[int, int]:
    """The size whose shorter side is `shorter`, or the frame's own when it is smaller (never
    upscaled), same aspect ratio, both sides even."""
    scale = min(1.0, shorter / min(width, height))
    if scale >= 1.0:
        return _even(width), _even(height)
    if width <= height:
        return _even(shorter), _nearest_even(height * scale, height)
    return _nearest_even(width * scale, width), _even(shorter)


def _nearest_even(value: float, at_most: int) -> int:
    """The even number nearest `value` (as FFmpeg's `scale=-2:480` picks), within `at_most`."""
    return min(_even(at_most), max(2, round(value / 2) * 2))


def plan_variants(upright_width: int, upright_height: int, story: bool) -> list[VideoVariantPlan]:
    """`mp4_720` and `mp4_480` of API.md and, for a story, the 9:16 `mp4_story` (cover-cropped
    from the centre, 720 wide or the crop's own width where that is smaller)."""
    plans = [
        VideoVariantPlan(
            name,
            *scaled_to_shorter_side(upright_width, upright_height, shorter),
            max_bitrate=bitrate,
            buffer_bits=2 * bitrate,
            audio_bitrate=audio,
        )
        for name, shorter, bitrate, audio in _VARIANTS
    ]
    if story:
        crop = story_crop(upright_width, upright_height)
        width = _even(min(STORY_WIDTH, crop[2]))
        height = _even(width / STORY_ASPECT)
        _, _, bitrate, audio = _VARIANTS[0]
        plans.insert(
            0,
            VideoVariantPlan(
                STORY_VARIANT, width, height, bitrate, 2 * bitrate, audio_bitrate=audio, crop=crop
            ),
        )
    return plans


def story_crop(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred 9:16 box of the frame, as (x, y, width, height), sides even."""
    if Fraction(width, height) > STORY_ASPECT:  # wider than 9:16: trim the sides
        crop_h = _even(height)
        crop_w = _even(min(Fraction(width), crop_h * STORY_ASPECT))
    else:
        crop_w = _even(width)
        crop_h = _even(min(Fraction(height), crop_w / STORY_ASPECT))
    return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h


def poster_time(duration_s: float) -> float:
    """When the poster is taken: a third of the way in, at most three seconds. The first frame
    is often black or a fade; three seconds in, a phone clip shows what it is about."""
    return max(0.0, min(duration_s / 3, 3.0))


def keeps_frame(time_s: float, last_kept_s: float | None, max_rate: float) -> bool:
    """Whether a frame shown at `time_s` is encoded, the last one kept having been shown at
    `last_kept_s`: frames closer than three quarters of an output frame are dropped (a 120 fps
    clip keeps every other frame; the quarter of tolerance keeps all of a 60 fps clip whose
    timestamps jitter)."""
    return last_kept_s is None or time_s - last_kept_s >= 0.75 / max_rate


def progress_percent(time_s: float, duration_s: float) -> int:
    """How far a transcode has got, 0..99 (100 is for a finished one, which is `ready`)."""
    if duration_s <= 0:
        return 0
    return max(0, min(99, int(time_s / duration_s * 100)))
