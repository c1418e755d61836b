from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glimpse.media.video_planning import (
    OUTPUT_MAX_FRAME_RATE,
    STORY_VARIANT,
    VideoProbe,
    check_limits,
    keeps_frame,
    plan_variants,
    poster_time,
    progress_percent,
    quarter_turns,
    scaled_to_shorter_side,
    story_crop,
    unsupported_codec,
    upright_size,
)


def probe(**changes: object) -> VideoProbe:
    values: dict[str, object] = {
        "container": "mov",
        "video_codec": "h264",
        "width": 1920,
        "height": 1080,
        "rotation": 0,
        "frame_rate": 30.0,
        "duration_s": 10.0,
        "audio_codec": "aac",
    }
    values.update(changes)
    return VideoProbe(**values)  # type: ignore[arg-type]


def test_a_phone_video_within_every_limit_passes() -> None:
    assert check_limits(probe(width=3840, height=2160, frame_rate=120, duration_s=90), 90) is None
    assert check_limits(probe(width=2160, height=3840), 90) is None  # 4K filmed upright


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"width": 3842, "height": 2160}, "too_many_pixels"),
        ({"width": 2160, "height": 3842}, "too_many_pixels"),
        ({"width": 3000, "height": 2162}, "too_many_pixels"),
        # One pixel past 4K either way, either way round (exactly 4K passes: see above).
        ({"width": 3841, "height": 2160}, "too_many_pixels"),
        ({"width": 3840, "height": 2161}, "too_many_pixels"),
        ({"width": 2160, "height": 3841}, "too_many_pixels"),
        ({"width": 2161, "height": 3840}, "too_many_pixels"),
        ({"frame_rate": 240.0}, "frame_rate_too_high"),
        ({"duration_s": 90.5}, "video_too_long"),
        ({"duration_s": 36_000.0}, "video_too_long"),
    ],
)
def test_a_video_past_a_limit_is_refused_with_its_code(
    changes: dict[str, object], code: str
) -> None:
    breach = check_limits(probe(**changes), 90)
    assert breach is not None and breach.code == code and breach.message


@pytest.mark.parametrize(("width", "height"), [(1, 1), (15, 720), (1280, 15)])
def test_a_video_too_small_to_play_without_upscaling_is_refused_as_invalid(
    width: int, height: int
) -> None:
    breach = check_limits(probe(width=width, height=height), 90)
    assert breach is not None and breach.code == "video_too_small" and not breach.too_large
    assert check_limits(probe(width=16, height=16), 90) is None


def test_sizes_are_held_to_the_limits_as_shown_too() -> None:
    # Pixels 100 times wider than tall: a 40x2160 stream is shown 4000 wide, past 4K
    # wide; pixels 300 times taller than wide make a 3840x2160 stream 13 px wide.
    wide = check_limits(probe(width=40, height=2160, pixel_aspect=Fraction(100)), 90)
    assert wide is not None and wide.code == "too_many_pixels"
    thin = check_limits(probe(width=3840, height=2160, pixel_aspect=Fraction(1, 300)), 90)
    assert thin is not None and thin.code == "video_too_small"


def test_a_story_s_9_by_16_middle_must_be_big_enough_to_play() -> None:
    # 1280x20 is a playable post (20 px high), but its story crop would be 10 px wide.
    assert check_limits(probe(width=1280, height=20), 90) is None
    breach = check_limits(probe(width=1280, height=20), 60, story=True)
    assert breach is not None and breach.code == "video_too_small" and not breach.too_large
    assert check_limits(probe(width=1280, height=30), 60, story=True) is None  # 16x28 crop


def test_a_story_is_held_to_its_own_shorter_limit() -> None:
    assert check_limits(probe(duration_s=75), 90) is None
    breach = check_limits(probe(duration_s=75), 60)
    assert breach is not None and breach.code == "video_too_long"


def test_codecs_outside_the_pipeline_are_named() -> None:
    assert unsupported_codec(probe()) is None
    assert unsupported_codec(probe(video_codec="hevc", audio_codec=None)) is None
    assert unsupported_codec(probe(video_codec="prores")) == "video encoded as prores"
    assert unsupported_codec(probe(audio_codec="dts")) == "sound encoded as dts"


@pytest.mark.parametrize(
    ("rotation", "turns", "size"),
    [(0, 0, (1920, 1080)), (90, 1, (1080, 1920)), (-90, 3, (1080, 1920)), (180, 2, (1920, 1080))],
)
def test_rotation_turns_the_frame(rotation: int, turns: int, size: tuple[int, int]) -> None:
    assert quarter_turns(rotation) == turns
    assert upright_size(probe(rotation=rotation)) == size


@pytest.mark.parametrize(("rotation", "turns"), [(80, 1), (100, 1), (-80, 3), (170, 2), (-170, 2)])
def test_a_rotation_between_quarter_turns_is_rounded_to_the_nearest(
    rotation: int, turns: int
) -> None:
    assert quarter_turns(rotation) == turns


def test_non_square_pixels_are_made_square() -> None:
    # DV-style anamorphic 720x480 at 32:27 is shown 853 pixels wide.
    assert upright_size(probe(width=720, height=480, pixel_aspect=Fraction(32, 27))) == (853, 480)


def test_variants_of_a_1080p_landscape_video() -> None:
    plans = plan_variants(1920, 1080, story=False)
    assert [(p.name, p.width, p.height) for p in plans] == [
        ("mp4_720", 1280, 720),
        ("mp4_480", 854, 480),
    ]
    assert plans[0].max_bitrate > plans[1].max_bitrate
    assert all(p.buffer_bits == 2 * p.max_bitrate for p in plans)


def test_variants_of_a_portrait_phone_video_take_the_width_as_shorter_side() -> None:
    assert [(p.width, p.height) for p in plan_variants(1080, 1920, story=False)] == [
        (720, 1280),
        (480, 854),
    ]


def test_a_small_video_gives_both_variants_at_its_own_even_size() -> None:
    assert [(p.width, p.height) for p in plan_variants(321, 241, story=False)] == [
        (320, 240),
        (320, 240),
    ]


def test_a_story_gets_a_9_by_16_variant_cropped_from_the_centre() -> None:
    [story, *_] = plan_variants(1920, 1080, story=True)
    assert story.name == STORY_VARIANT
    assert (story.width, story.height) == (606, 1076)  # the crop is 606x1080: never upscaled
    assert story.crop == (657, 0, 606, 1080)
    [story, *_] = plan_variants(1080, 1920, story=True)
    assert (story.width, story.height, story.crop) == (720, 1280, (0, 0, 1080, 1920))


dimensions = st.integers(min_value=2, max_value=8192)


@given(dimensions, dimensions)
def test_variants_are_even_never_upscaled_and_keep_the_aspect_ratio(
    width: int, height: int
) -> None:
    for plan in plan_variants(width, height, story=True):
        assert plan.width % 2 == 0 and plan.height % 2 == 0
        assert plan.width <= max(2, width) and plan.height <= max(2, height)
        if plan.crop is None:
            assert min(plan.width, plan.height) <= 720
            # Within the rounding of each side to an even number.
            assert abs(plan.width / plan.height - width / height) <= 2 / min(
                plan.width, plan.height
            ) * (width / height) + 2 / min(plan.width, plan.height)


@given(dimensions, dimensions)
def test_the_story_crop_is_inside_the_frame_and_9_by_16(width: int, height: int) -> None:
    x, y, w, h = story_crop(width, height)
    assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
    assert abs(w / h - 9 / 16) <= 2 / h + 2 / w


def test_scaled_to_shorter_side_rounds_to_even() -> None:
    assert scaled_to_shorter_side(1280, 720, 480) == (854, 480)
    assert scaled_to_shorter_side(1000, 1000, 720) == (720, 720)


def test_the_poster_is_taken_a_third_in_at_most_three_seconds() -> None:
    assert poster_time(0.6) == pytest.approx(0.2)
    assert poster_time(90) == 3.0
    assert poster_time(0) == 0.0


def test_a_120_fps_clip_keeps_every_other_frame_and_60_fps_keeps_all() -> None:
    def kept(fps: float, frames: int) -> int:
        last, count = None, 0
        for index in range(frames):
            time_s = index / fps
            if keeps_frame(time_s, last, OUTPUT_MAX_FRAME_RATE):
                last, count = time_s, count + 1
        return count

    assert kept(120, 120) == 60
    assert kept(60, 60) == 60
    assert kept(30, 30) == 30


def test_progress_stays_below_100_until_the_work_is_recorded() -> None:
    assert progress_percent(0, 10) == 0
    assert progress_percent(5, 10) == 50
    assert progress_percent(12, 10) == 99
    assert progress_percent(1, 0) == 0
