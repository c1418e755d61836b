"""Aspect-ratio clamping, variant sizes and decode planning: integer arithmetic only.

Everything here is pure so that the geometry of the image pipeline can be tested
without decoding a single pixel; `images.py` only carries these plans out.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_ASPECT = 4 / 5
MAX_ASPECT = 1.91

# The same bounds as exact fractions, so that rounding can never push a clamped
# box outside [MIN_ASPECT, MAX_ASPECT].
_MIN_NUM, _MIN_DEN = 4, 5
_MAX_NUM, _MAX_DEN = 191, 100

WIDTH_VARIANTS: tuple[tuple[str, int], ...] = (("w1080", 1080), ("w640", 640), ("w320", 320))
SQUARE_VARIANT: tuple[str, int] = ("sq150", 150)
# Stories also get a full-screen variant: 9:16, cover-cropped (the whole screen filled, the
# photo's overflow cut off evenly), always this size, as a phone shows it edge to edge.
STORY_VARIANT = "story"
STORY_SIZE: tuple[int, int] = (1080, 1920)

# JPEG DCT scaling in libjpeg decodes at 1/1, 1/2, 1/4 or 1/8 of the stored size.
_DCT_SCALES = (8, 4, 2, 1)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class VariantPlan:
    """One output size of a processed photo."""

    name: str
    width: int
    height: int


def clamp_aspect_box(width: int, height: int) -> Box:
    """Centre-crop box (left, top, right, bottom) bringing width/height into 4:5..1.91:1.

    The whole image when its aspect ratio is already inside the range.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if width * _MAX_DEN > height * _MAX_NUM:
        new_width = max(1, height * _MAX_NUM // _MAX_DEN)
        left = (width - new_width) // 2
        return (left, 0, left + new_width, height)
    if width * _MIN_DEN < height * _MIN_NUM:
        new_height = max(1, width * _MIN_DEN // _MIN_NUM)
        top = (height - new_height) // 2
        return (0, top, width, top + new_height)
    return (0, 0, width, height)


def _scaled_height(width: int, height: int, new_width: int) -> int:
    # Round half up in integers; float rounding would make sizes platform-dependent.
    return max(1, (2 * height * new_width + width) // (2 * width))


def plan_variants(width: int, height: int) -> list[VariantPlan]:
    """Sizes of every image variant of a processed (upright, clamped) photo, largest first.

    Width variants are N pixels wide or the photo's own width where smaller (never
    upscaled), keeping the aspect ratio. The square is always 150x150 (API.md): the centre
    square, scaled up for a photo smaller than that, so grids can rely on its size.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    plans = []
    for name, target in WIDTH_VARIANTS:
        w = min(target, width)
        plans.append(VariantPlan(name, w, _scaled_height(width, height, w)))
    name, side = SQUARE_VARIANT
    plans.append(VariantPlan(name, side, side))
    return plans


def upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """Size once EXIF orientation is applied: orientations 5-8 swap the axes."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def box_to_stored(box: Box, upright_width: int, upright_height: int, orientation: int) -> Box:
    """Map a box given on the upright image back onto the image as stored.

    Lets the pipeline crop and resize before rotating, so only the small result
    is ever transposed. `orientation` is the EXIF value (1-8; anything else is 1).
    """
    uw, uh = upright_width, upright_height

    def to_stored(u: int, v: int) -> tuple[int, int]:
        # Inverse of the transform EXIF orientation asks for (see PIL.ImageOps.exif_transpose).
        if orientation == 2:
            return uw - u, v
        if orientation == 3:
            return uw - u, uh - v
        if orientation == 4:
            return u, uh - v
        if orientation == 5:
            return v, u
        if orientation == 6:
            return v, uw - u
        if orientation == 7:
            return uh - v, uw - u
        if orientation == 8:
            return uh - v, u
        return u, v

    x0, y0 = to_stored(box[0], box[1])
    x1, y1 = to_stored(box[2], box[3])
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def jpeg_draft_scale(
    crop_width: int, crop_height: int, target_width: int, target_height: int
) -> int:
    """Largest DCT reduction (8, 4, 2 or 1) that still leaves the crop at least target-sized.

    One pixel of margin per axis absorbs the rounding of the scaled crop box, so the
    final resize never upscales.
    """
    for scale in _DCT_SCALES:
        if crop_width >= scale * (target_width + 1) and crop_height >= scale * (target_height + 1):
            return scale
    return 1


def jpeg_draft_request(stored_width: int, stored_height: int, scale: int) -> tuple[int, int]:
    """Size to pass to `Image.draft` so that Pillow picks exactly `scale`.

    Pillow chooses the largest scale s with stored // requested >= s on both axes.
    """
    return (max(1, stored_width // scale), max(1, stored_height // scale))


def blurhash_size(width: int, height: int, longest: int = 32) -> tuple[int, int]:
    """Size of the tiny copy the blurhash is computed from (aspect kept, never upscaled)."""
    if width >= height:
        w = min(longest, width)
        return w, _scaled_height(width, height, w)
    h = min(longest, height)
    return max(1, (2 * width * h + height) // (2 * height)), h


def cover_box(width: int, height: int, target_width: int, target_height: int) -> Box:
    """The largest centred box of the target's aspect ratio inside a width x height image: what
    is left when the image is scaled to cover the target and the overflow is cut off evenly."""
    if min(width, height, target_width, target_height) < 1:
        raise ValueError("sizes must be positive")
    if width * target_height > height * target_width:  # wider than the target: trim the sides
        new_width = max(1, height * target_width // target_height)
        left = (width - new_width) // 2
        return (left, 0, left + new_width, height)
    new_height = max(1, width * target_height // target_width)
    top = (height - new_height) // 2
    return (0, top, width, top + new_height)


def centre_square_box(width: int, height: int) -> Box:
    """The largest centred square inside a width x height image."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)
