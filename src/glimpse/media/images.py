"""The one adapter over Pillow: read image headers, turn an original into its variants.

Synchronous and CPU-bound; callers run it in a worker thread or process. The geometry
comes from `planning`, the colour grades from `filters`; this module only decodes,
resamples and encodes.

The pipeline decodes as little as it can and touches full-size pixels once: JPEGs
decode at a reduced DCT scale (`Image.draft`) that still leaves the largest variant
covered, the crop and the resize to that variant are one resampling pass done in the
stored orientation, and only the small result is rotated, filtered and resized again
(each smaller variant from the previous one).
"""

from __future__ import annotations

import io
import mmap
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import blurhash
import pillow_heif
from PIL import Image, ImageCms, JpegImagePlugin, features

from glimpse.media.filters import FILTERS, apply_filter
from glimpse.media.headers import UnreadableHeader, read_header_size
from glimpse.media.planning import (
    SQUARE_VARIANT,
    STORY_SIZE,
    STORY_VARIANT,
    Box,
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
from glimpse.media.sniff import (
    SNIFF_BYTES,
    MediaType,
    StructureProblem,
    check_structure,
    iso_bmff_truncation,
    jpeg_scan_damage,
    sniff_media_type,
)

pillow_heif.register_heif_opener()

JPEG_QUALITY = 82
MAX_KEPT_ICC_BYTES = 64 * 1024
WEBP_QUALITY = 80
# libwebp's `method` trades encode time for size. Measured on this pipeline's four
# variants of an 8 MP photo: method 4 (the default) 113 ms / 233 KB, method 2 55 ms /
# 242 KB, method 0 34 ms / 269 KB. Method 2 halves the dominant cost for 4 % more bytes.
WEBP_METHOD = 2
BLURHASH_COMPONENTS = (4, 3)
# AVIF copies are made of the two largest widths only, after the post is ready
# (posts/avif.py): the small ones gain a few hundred bytes, not worth a job's time.
AVIF = "image/avif"
AVIF_VARIANT_NAMES = ("w1080", "w640")

# Only the decoders we mean to run: Pillow would otherwise try every format it knows
# (EPS through Ghostscript, PSD, ...) on attacker-supplied bytes. "JPEG" also opens
# MPO files (JPEGs with extra pictures appended, as phones write them).
_PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "HEIF")

# What Pillow raises on bytes it cannot decode. struct.error and EOFError escape from
# some plugins' header parsers on truncated input.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)

# EXIF orientation -> the transpose that makes the stored pixels upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_EXIF_ORIENTATION = 0x0112
_WHITE = (255, 255, 255)
# Modes whose transparency must be flattened; Pillow resamples RGBA premultiplied,
# so resizing before flattening is both correct and cheaper.
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, before any pixel is decoded (size as stored)."""

    media_type: MediaType
    width: int
    height: int


@dataclass(frozen=True)
class EncodedVariant:
    """One encoded output file."""

    name: str
    content_type: str
    width: int
    height: int
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class ProcessedImage:
    """Every variant of a photo; width/height are the upright, aspect-clamped photo's."""

    width: int
    height: int
    blurhash: str
    variants: list[EncodedVariant]


class UndecodableImage(Exception):
    """permanent: the bytes cannot be decoded (truncated, corrupt, lying about type)"""


class TooComplexImage(UndecodableImage):
    """permanent: the file is built to make decoding cost far more than any real photo (more
    scans or chunks than any encoder writes)"""


def read_image_header(path: str | os.PathLike[str]) -> ImageHeader:
    """Type and stored size of an image file, without decoding its pixels.

    Parsed without decoder libraries (see `headers`), so it reads a few KB and takes well under
    a millisecond whatever the file holds. Raises UndecodableImage when the file is not an image
    type Glimpse accepts or its header cannot be parsed. Never raises for size: comparing pixels
    to a limit is the caller's decision.
    """
    with open(path, "rb") as fp:
        try:
            header = read_header_size(fp)
        except UnreadableHeader as exc:
            raise UndecodableImage(str(exc)) from exc
    return ImageHeader(header.media_type, header.width, header.height)


def check_file_structure(path: str | os.PathLike[str]) -> StructureProblem | None:
    """`sniff.check_structure` of a spooled upload, read through mmap (no copy of the file in
    this process's memory): a few ms for the largest upload, so the API can refuse a scan bomb
    or a chunk flood with 415/422 before it is stored. The worker checks again regardless."""
    with open(path, "rb") as fp:
        if os.fstat(fp.fileno()).st_size == 0:
            return None
        with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return check_structure(view)  # type: ignore[arg-type]


def process_image(data: bytes, filter_name: str, story: bool = False) -> ProcessedImage:
    """Decode an original and produce every variant, filtered, stripped of metadata; with
    `story`, also the full-screen `story` variant (1080x1920, cover-cropped from the upright
    photo, not from the clamped one: a portrait story keeps its height).

    Output is deterministic: the same bytes and filter always give the same files.
    Raises KeyError for an unknown filter, TooComplexImage for a file built to make decoding
    crawl (refused before any decoder runs) and UndecodableImage for bytes that cannot be
    decoded.
    """
    decoded = _decode_checked(data, filter_name)
    try:
        full_screen = _decode_story_variant(io.BytesIO(data)) if story else None
    except _DECODE_ERRORS as exc:
        raise UndecodableImage(f"the image cannot be decoded: {exc}") from exc

    filtered = apply_filter(decoded.image, filter_name)
    images = _chain_resize(filtered, decoded.plans)
    del filtered
    # From w320 (or the photo itself when smaller): the blurhash only needs a thumbnail.
    hash_ = _blurhash(images[2])
    outputs = list(zip(decoded.plans, images, strict=True))
    if full_screen is not None:
        width, height = STORY_SIZE
        plan = VariantPlan(STORY_VARIANT, width, height)
        outputs.insert(0, (plan, apply_filter(full_screen.image, filter_name)))

    variants: list[EncodedVariant] = []
    for plan, image in outputs:
        # Resampled images inherit the original's info (EXIF, XMP, comments) and some
        # encoders read it from there: it goes before anything is written.
        image.info.clear()
        for content_type, encoded in _encode(image, decoded.icc_profile):
            variants.append(
                EncodedVariant(plan.name, content_type, image.width, image.height, encoded)
            )
    return ProcessedImage(decoded.width, decoded.height, hash_, variants)


@dataclass
class _Decoded:
    image: Image.Image  # the largest variant, upright, RGB, not yet filtered
    width: int  # the processed photo: upright, clamped, at full resolution
    height: int
    plans: list[VariantPlan]
    icc_profile: bytes | None


def _decode_checked(data: bytes, filter_name: str) -> _Decoded:
    """The original's largest variant, once the file passed the checks that refuse what would
    make a decoder crawl or quietly invent pixels."""
    if filter_name not in FILTERS:
        # The caller's bug, not the image's: fail before spending time on decoding.
        raise KeyError(filter_name)
    problem = check_structure(data)
    if problem is not None:
        raise (TooComplexImage if problem.too_complex else UndecodableImage)(problem.reason)
    media_type = sniff_media_type(data[:SNIFF_BYTES])
    # The decoders would quietly fill what is damaged or missing with grey or green.
    damage = (
        jpeg_scan_damage(data)
        if media_type is MediaType.JPEG
        else iso_bmff_truncation(data)
        if media_type is MediaType.HEIC
        else None
    )
    if damage is not None:
        raise UndecodableImage(f"the image is damaged: {damage}")
    try:
        return _decode_largest_variant(io.BytesIO(data))
    except _DECODE_ERRORS as exc:
        raise UndecodableImage(f"the image cannot be decoded: {exc}") from exc


def avif_available() -> bool:
    """Whether this Pillow can write AVIF (built in since Pillow 11.2, with libavif in the
    wheels; a Pillow built from source without libavif cannot)."""
    return bool(features.check("avif"))


class AvifUnavailable(Exception):
    """permanent here: this Pillow has no AVIF encoder"""


def make_avif_variants(
    data: bytes, filter_name: str, quality: int, speed: int
) -> list[EncodedVariant]:
    """`w1080` and `w640` of an original as AVIF: the same pixels as the JPEG and WebP that
    `process_image` made of it (the same decode, filter and chained resizes, which are
    deterministic), so the same sizes. `speed` is libavif's 0 (slowest, smallest) to 10.

    Raises what process_image raises, and AvifUnavailable.
    """
    if not avif_available():
        raise AvifUnavailable("this Pillow has no AVIF encoder")
    decoded = _decode_checked(data, filter_name)
    wanted = [plan for plan in decoded.plans if plan.name in AVIF_VARIANT_NAMES]
    # The chain from the largest variant, as process_image resizes it (w640 from w1080).
    images = _chain_resize(apply_filter(decoded.image, filter_name), wanted)
    variants = []
    for plan, image in zip(wanted, images, strict=True):
        image.info.clear()
        encoded = encode_avif(image, decoded.icc_profile, quality, speed)
        variants.append(EncodedVariant(plan.name, AVIF, image.width, image.height, encoded))
    return variants


def encode_avif(image: Image.Image, icc_profile: bytes | None, quality: int, speed: int) -> bytes:
    """An RGB picture as AVIF (4:2:0, as the JPEG and WebP are), with the ICC profile only.
    One encoder thread: a job is one core's work, as every other encode here is."""
    out = io.BytesIO()
    image.save(
        out,
        "AVIF",
        quality=quality,
        speed=speed,
        max_threads=1,
        icc_profile=icc_profile or b"",
    )
    return out.getvalue()


def _decode_largest_variant(fp: BinaryIO) -> _Decoded:
    plans: list[VariantPlan] = []

    def clamped(upright_width: int, upright_height: int) -> tuple[Box, tuple[int, int]]:
        crop = clamp_aspect_box(upright_width, upright_height)
        plans.extend(plan_variants(crop[2] - crop[0], crop[3] - crop[1]))
        return crop, (plans[0].width, plans[0].height)

    image, crop, icc_profile = _decode_box(fp, clamped)
    return _Decoded(image, crop[2] - crop[0], crop[3] - crop[1], plans, icc_profile)


def _decode_story_variant(fp: BinaryIO) -> _Decoded:
    def covered(upright_width: int, upright_height: int) -> tuple[Box, tuple[int, int]]:
        return cover_box(upright_width, upright_height, *STORY_SIZE), STORY_SIZE

    image, crop, icc_profile = _decode_box(fp, covered)
    return _Decoded(image, crop[2] - crop[0], crop[3] - crop[1], [], icc_profile)


def _decode_box(
    fp: BinaryIO, plan: Callable[[int, int], tuple[Box, tuple[int, int]]]
) -> tuple[Image.Image, Box, bytes | None]:
    """The part of the image `plan` chooses (a box on the upright image) at the size it
    chooses, upright, RGB; with its ICC profile. `plan` is given the upright size."""
    with Image.open(fp, formats=_PILLOW_FORMATS) as im:
        stored_width, stored_height = im.size
        orientation = _orientation(im)
        upright_width, upright_height = upright_size(stored_width, stored_height, orientation)
        crop, (target_width, target_height) = plan(upright_width, upright_height)
        crop_width, crop_height = crop[2] - crop[0], crop[3] - crop[1]

        scale = 1.0
        if isinstance(im, JpegImagePlugin.JpegImageFile):
            dct = jpeg_draft_scale(crop_width, crop_height, target_width, target_height)
            drafted = im.draft("RGB", jpeg_draft_request(stored_width, stored_height, dct))
            if drafted is not None:
                scale = stored_width / drafted[1][2]

        source, icc_profile = _to_resizable(im)
        left, top, right, bottom = box_to_stored(crop, upright_width, upright_height, orientation)
        target = (target_width, target_height)
        if orientation in (5, 6, 7, 8):
            target = (target_height, target_width)
        # Crop and resize in one resampling pass, in the stored orientation: the
        # decoded pixels are never rotated or cropped on their own. The box is in
        # full-resolution coordinates; the draft decoded at 1/scale of that.
        image = source.resize(
            target,
            Image.Resampling.LANCZOS,
            box=(left / scale, top / scale, right / scale, bottom / scale),
            reducing_gap=3.0,
        )
        del source
    if orientation in _UPRIGHT:
        image = image.transpose(_UPRIGHT[orientation])
    image = _flatten_to_rgb(image)
    image, icc_profile = _fit_profile(image, icc_profile)
    return image, crop, icc_profile


def _orientation(im: Image.Image) -> int:
    """EXIF orientation 1-8, or 1 when absent or unreadable."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:
        # EXIF is untrusted input parsed by many code paths: any failure means "as stored".
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _rgb_icc_profile(im: Image.Image) -> bytes | None:
    profile = im.info.get("icc_profile")
    # The ICC header's colour-space field (bytes 16-19): a CMYK or grey profile attached
    # to RGB output would make viewers misread every pixel.
    if isinstance(profile, bytes) and profile[16:20] == b"RGB ":
        return profile
    return None


def _fit_profile(image: Image.Image, profile: bytes | None) -> tuple[Image.Image, bytes | None]:
    """Keep a colour profile of a usual size; convert the pixels to sRGB from a larger one.

    sRGB, Display P3 and Adobe RGB profiles take 0.5-4 KB. One of megabytes is padding or an
    attack, and would be copied into all eight variants (the 150 px thumbnail included)."""
    if profile is None or len(profile) <= MAX_KEPT_ICC_BYTES:
        return image, profile
    try:
        converted = ImageCms.profileToProfile(
            image,
            ImageCms.ImageCmsProfile(io.BytesIO(profile)),
            ImageCms.createProfile("sRGB"),
            outputMode="RGB",
        )
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image, None  # not a usable profile: the pixels are taken as sRGB
    return (converted if converted is not None else image), None


def _to_resizable(im: Image.Image) -> tuple[Image.Image, bytes | None]:
    """The decoded image in a mode that resamples correctly, and the ICC profile to keep.

    RGB and L pass as they are (L becomes RGB after the resize, at a fraction of the
    cost); transparency becomes RGBA so the resize can premultiply it.
    """
    icc_profile = _rgb_icc_profile(im)
    mode = im.mode
    if mode in ("RGB", "L") or mode in _ALPHA_MODES:
        return im, icc_profile
    if mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB"), icc_profile
    if mode == "CMYK":
        profile = im.info.get("icc_profile")
        if isinstance(profile, bytes) and profile[16:20] == b"CMYK":
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(
                im, ImageCms.ImageCmsProfile(io.BytesIO(profile)), srgb, outputMode="RGB"
            )
            if converted is not None:
                return converted, None
        return im.convert("RGB"), None
    if mode.startswith("I;16") or mode == "I":
        # 16-bit greys: keep the top 8 bits rather than clipping everything above 255.
        wide = im if mode == "I" else im.convert("I")
        return wide.point(lambda v: v / 256).convert("L"), None
    return im.convert("RGB"), None


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, _WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _chain_resize(largest: Image.Image, plans: list[VariantPlan]) -> list[Image.Image]:
    """Every variant, each resampled from the one before (they shrink by 2x or less)."""
    images = [largest]
    for plan in plans[1:]:
        previous = images[-1]
        size = (plan.width, plan.height)
        if plan.name == SQUARE_VARIANT[0]:
            box = centre_square_box(*previous.size)
            images.append(previous.resize(size, Image.Resampling.LANCZOS, box=box))
        elif previous.size == size:
            images.append(previous)
        else:
            images.append(previous.resize(size, Image.Resampling.LANCZOS))
    return images


def encode_still(image: Image.Image) -> list[tuple[str, bytes]]:
    """An RGB picture (a video's poster) as JPEG and WebP, at the photos' qualities, with no
    metadata: what `process_image` writes for each variant."""
    image.info.clear()
    return _encode(image, None)


def blurhash_of(image: Image.Image) -> str:
    """The blurhash of an RGB picture (a video's poster), as photos get theirs."""
    return _blurhash(image)


def _blurhash(image: Image.Image) -> str:
    tiny = image.resize(blurhash_size(*image.size), Image.Resampling.BOX)
    # blurhash.encode closes the image it is given: hand it a throwaway copy.
    return str(blurhash.encode(tiny, *BLURHASH_COMPONENTS))


def _encode(image: Image.Image, icc_profile: bytes | None) -> list[tuple[str, bytes]]:
    """The image as JPEG and as WebP, with the ICC profile and no other metadata."""
    jpeg = io.BytesIO()
    image.save(jpeg, "JPEG", quality=JPEG_QUALITY, optimize=True, icc_profile=icc_profile or None)
    webp = io.BytesIO()
    image.save(
        webp, "WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD, icc_profile=icc_profile or ""
    )
    return [(MediaType.JPEG.value, jpeg.getvalue()), (MediaType.WEBP.value, webp.getvalue())]
