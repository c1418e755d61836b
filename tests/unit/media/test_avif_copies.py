"""`images.make_avif_variants`: the AVIF copies of w1080 and w640 are the very picture the JPEG
and WebP show (same crop, orientation, filter and size), carry no metadata but the colour
profile, and come out byte for byte the same each time (their keys are content-addressed)."""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image, ImageChops, ImageStat

from glimpse.media import images
from glimpse.media.images import (
    AVIF,
    AvifUnavailable,
    EncodedVariant,
    UndecodableImage,
    make_avif_variants,
    process_image,
)
from tests.conftest import testdata

QUALITY, SPEED = 60, 9


def decode(v: EncodedVariant) -> Image.Image:
    im = Image.open(io.BytesIO(v.data))
    im.load()
    return im


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    mse = sum(ImageStat.Stat(diff).sum2) / (3 * a.width * a.height)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.mark.parametrize(
    ("relative", "filter_name"),
    [
        ("camera/canon_hdr_YES.jpg", "normal"),  # orientation 6, clamped to 4:5
        ("orientation/Portrait_5.jpg", "inkwell"),  # orientation 5, black and white
        ("heic/IMG_5195.HEIC", "clarendon"),
    ],
)
def test_the_copies_show_the_jpegs_picture_at_its_size(relative: str, filter_name: str) -> None:
    data = testdata(relative).read_bytes()
    made = make_avif_variants(data, filter_name, QUALITY, SPEED)
    processed = process_image(data, filter_name)
    assert [(v.name, v.content_type) for v in made] == [("w1080", AVIF), ("w640", AVIF)]
    for copy in made:
        [jpeg] = [
            v for v in processed.variants if v.name == copy.name and v.content_type == "image/jpeg"
        ]
        picture, reference = decode(copy), decode(jpeg)
        assert picture.format == "AVIF"
        assert (copy.width, copy.height) == picture.size == reference.size
        assert psnr(picture, reference) > 30, copy.name


def test_no_metadata_but_the_colour_profile_survives() -> None:
    path = testdata("camera/DSCN0010.jpg")
    with Image.open(path) as original:
        assert original.getexif().get_ifd(0x8825), "the test photo should carry GPS"
    for copy in make_avif_variants(path.read_bytes(), "normal", QUALITY, SPEED):
        im = decode(copy)
        assert not im.getexif() and not {"exif", "xmp"} & set(im.info)
        assert b"Exif\x00\x00" not in copy.data
    path = testdata("large/string.jpg")
    with Image.open(path) as original:
        profile = original.info["icc_profile"]
    for copy in make_avif_variants(path.read_bytes(), "normal", QUALITY, SPEED):
        assert decode(copy).info.get("icc_profile") == profile


def test_the_same_original_gives_the_same_bytes() -> None:
    data = testdata("orientation/Landscape_6.jpg").read_bytes()
    assert make_avif_variants(data, "gingham", QUALITY, SPEED) == make_avif_variants(
        data, "gingham", QUALITY, SPEED
    )


def test_the_quality_setting_is_applied() -> None:
    data = testdata("orientation/Landscape_6.jpg").read_bytes()
    low = make_avif_variants(data, "normal", 20, SPEED)
    high = make_avif_variants(data, "normal", 90, SPEED)
    assert all(a.size * 2 < b.size for a, b in zip(low, high, strict=True))


def test_what_cannot_be_made_is_refused_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    data = testdata("camera/DSCN0010.jpg").read_bytes()
    with pytest.raises(KeyError):
        make_avif_variants(data, "no-such-filter", QUALITY, SPEED)
    with pytest.raises(UndecodableImage):
        make_avif_variants(data[: len(data) // 2], "normal", QUALITY, SPEED)
    monkeypatch.setattr(images.features, "check", lambda feature: False)
    assert not images.avif_available()
    with pytest.raises(AvifUnavailable):
        make_avif_variants(data, "normal", QUALITY, SPEED)
