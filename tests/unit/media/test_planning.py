import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from glimpse.media.planning import (
    MAX_ASPECT,
    MIN_ASPECT,
    VariantPlan,
    blurhash_size,
    box_to_stored,
    centre_square_box,
    clamp_aspect_box,
    cover_box,
    jpeg_draft_request,
    jpeg_draft_scale,
    plan_variants,
    upright_size,
)

sizes = st.integers(min_value=1, max_value=20_000)


def test_very_wide_photo_is_cropped_to_191_to_100_around_its_centre() -> None:
    assert clamp_aspect_box(3000, 1000) == (545, 0, 2455, 1000)


def test_very_tall_photo_is_cropped_to_4_by_5_around_its_centre() -> None:
    assert clamp_aspect_box(1000, 3000) == (0, 875, 1000, 2125)


@pytest.mark.parametrize("size", [(1800, 1200), (1200, 1500), (191, 100), (4, 5), (1, 1)])
def test_photo_inside_the_range_is_kept_whole(size: tuple[int, int]) -> None:
    assert clamp_aspect_box(*size) == (0, 0, *size)


def test_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        clamp_aspect_box(0, 10)
    with pytest.raises(ValueError):
        plan_variants(10, 0)


@given(sizes, sizes)
def test_clamped_box_is_inside_centred_maximal_and_in_range(width: int, height: int) -> None:
    left, top, right, bottom = clamp_aspect_box(width, height)
    assert 0 <= left < right <= width
    assert 0 <= top < bottom <= height
    w, h = right - left, bottom - top
    # Only one axis is ever cropped, and evenly on both sides (to the pixel).
    assert w == width or h == height
    assert abs(left - (width - right)) <= 1
    assert abs(top - (height - bottom)) <= 1
    if min(width, height) >= 2:
        assert MIN_ASPECT <= w / h <= MAX_ASPECT
    if w == width and h == height:
        return
    # Maximal: one more pixel on the cropped axis would leave the range.
    if w < width:
        assert (w + 1) / h > MAX_ASPECT
    else:
        assert w / (h + 1) < MIN_ASPECT


def test_variants_of_a_landscape_photo() -> None:
    assert plan_variants(1800, 1200) == [
        VariantPlan("w1080", 1080, 720),
        VariantPlan("w640", 640, 427),
        VariantPlan("w320", 320, 213),
        VariantPlan("sq150", 150, 150),
    ]


def test_variants_of_a_portrait_photo() -> None:
    assert plan_variants(3024, 3780) == [
        VariantPlan("w1080", 1080, 1350),
        VariantPlan("w640", 640, 800),
        VariantPlan("w320", 320, 400),
        VariantPlan("sq150", 150, 150),
    ]


def test_small_photo_is_never_upscaled() -> None:
    assert plan_variants(500, 400) == [
        VariantPlan("w1080", 500, 400),
        VariantPlan("w640", 500, 400),
        VariantPlan("w320", 320, 256),
        VariantPlan("sq150", 150, 150),
    ]
    assert plan_variants(100, 80)[-1] == VariantPlan("sq150", 150, 150)
    assert {(p.width, p.height) for p in plan_variants(100, 80)[:3]} == {(100, 80)}


@given(sizes, sizes)
def test_variants_keep_the_aspect_ratio_and_never_upscale(width: int, height: int) -> None:
    plans = plan_variants(width, height)
    assert [p.name for p in plans] == ["w1080", "w640", "w320", "sq150"]
    for plan, target in zip(plans[:3], (1080, 640, 320), strict=True):
        assert plan.width == min(target, width)
        assert 1 <= plan.height <= height
        # Height is the exact proportional height, rounded.
        assert abs(plan.height - height * plan.width / width) <= 0.5 or plan.height == 1
    square = plans[3]
    assert square.width == square.height == 150


@pytest.mark.parametrize("orientation", range(1, 9))
def test_box_mapped_to_stored_crops_the_same_pixels(orientation: int) -> None:
    rng = random.Random(orientation)
    stored = Image.frombytes("L", (7, 5), bytes(rng.randrange(256) for _ in range(35)))
    transpose = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    upright = stored.transpose(transpose) if transpose is not None else stored
    assert upright.size == upright_size(*stored.size, orientation)
    box = (1, 2, 3, 5) if upright.width < upright.height else (1, 0, 4, 2)
    stored_box = box_to_stored(box, *upright.size, orientation)
    crop = stored.crop(stored_box)
    if transpose is not None:
        crop = crop.transpose(transpose)
    assert crop.tobytes() == upright.crop(box).tobytes()


@pytest.mark.parametrize(
    ("crop", "target", "scale"),
    [
        ((6028, 3391), (1080, 608), 4),  # 20 MP landscape
        ((8660, 5773), (1080, 720), 8),  # 50 MP
        ((3264, 2448), (1080, 810), 2),  # 8 MP
        ((1800, 1200), (1080, 720), 1),
        ((640, 480), (640, 480), 1),
        ((4324, 2436), (1080, 608), 4),  # exactly 4 * (target + 1)
        ((4323, 2436), (1080, 608), 2),
    ],
)
def test_jpeg_draft_scale(crop: tuple[int, int], target: tuple[int, int], scale: int) -> None:
    assert jpeg_draft_scale(*crop, *target) == scale


@given(sizes, sizes, st.sampled_from([1, 2, 4, 8]))
def test_draft_request_makes_pillow_choose_that_scale(width: int, height: int, scale: int) -> None:
    # Pillow's JpegImageFile.draft: the largest s in (8, 4, 2, 1) with
    # min(width // requested_w, height // requested_h) >= s.
    if min(width, height) < 2 * scale:
        return
    rw, rh = jpeg_draft_request(width, height, scale)
    ratio = min(width // rw, height // rh)
    chosen = next(s for s in (8, 4, 2, 1) if ratio >= s)
    assert chosen == scale


@given(sizes, sizes)
def test_draft_never_leaves_the_crop_smaller_than_the_target(width: int, height: int) -> None:
    largest = plan_variants(width, height)[0]
    scale = jpeg_draft_scale(width, height, largest.width, largest.height)
    assert width // scale >= largest.width
    assert height // scale >= largest.height


def test_centre_square_box() -> None:
    assert centre_square_box(320, 213) == (53, 0, 266, 213)
    assert centre_square_box(320, 400) == (0, 40, 320, 360)


def test_cover_box_cuts_the_overflow_evenly() -> None:
    # A landscape photo loses its sides, a too-tall one its top and bottom.
    assert cover_box(1600, 900, 1080, 1920) == (547, 0, 1053, 900)
    assert cover_box(1000, 3000, 1080, 1920) == (0, 611, 1000, 2388)
    assert cover_box(1080, 1920, 1080, 1920) == (0, 0, 1080, 1920)


@given(sizes, sizes)
def test_cover_box_has_the_targets_aspect_and_stays_inside(width: int, height: int) -> None:
    left, top, right, bottom = cover_box(width, height, 1080, 1920)
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    w, h = right - left, bottom - top
    assert w == width or h == height  # as large as fits: one side whole
    # 9:16 to within the rounding of one pixel.
    assert abs(w * 1920 - h * 1080) <= max(1920, 1080)
    assert abs(left - (width - right)) <= 1 and abs(top - (height - bottom)) <= 1


def test_blurhash_size_keeps_aspect_and_never_upscales() -> None:
    assert blurhash_size(320, 213) == (32, 21)
    assert blurhash_size(320, 400) == (26, 32)
    assert blurhash_size(10, 8) == (10, 8)
