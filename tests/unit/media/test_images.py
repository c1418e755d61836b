import io
import os
import struct
import zlib
from pathlib import Path

import blurhash
import pytest
from PIL import Image, ImageChops, ImageCms, ImageStat, JpegImagePlugin

from glimpse.media.images import (
    EncodedVariant,
    ImageHeader,
    ProcessedImage,
    UndecodableImage,
    process_image,
    read_image_header,
)
from glimpse.media.sniff import MediaType
from tests.conftest import CAMERA_PHOTOS, HEIC_PHOTOS, testdata

_processed: dict[tuple[Path, str], ProcessedImage] = {}


def processed(path: Path, filter_name: str = "normal") -> ProcessedImage:
    """process_image on a test photo, once per test session (the slow part of this suite)."""
    key = (path, filter_name)
    if key not in _processed:
        _processed[key] = process_image(path.read_bytes(), filter_name)
    return _processed[key]


def decode(variant: EncodedVariant) -> Image.Image:
    im = Image.open(io.BytesIO(variant.data))
    im.load()
    return im


def variant(result: ProcessedImage, name: str, content_type: str = "image/jpeg") -> EncodedVariant:
    (found,) = [v for v in result.variants if v.name == name and v.content_type == content_type]
    return found


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


@pytest.mark.parametrize("n", range(9))
def test_landscape_photos_come_out_landscape_whatever_their_exif_orientation(n: int) -> None:
    result = processed(testdata(f"orientation/Landscape_{n}.jpg"))
    assert (result.width, result.height) == (1800, 1200)
    upright = decode(variant(result, "w320"))
    reference = decode(variant(processed(testdata("orientation/Landscape_1.jpg")), "w320"))
    assert upright.size == reference.size == (320, 213)
    # Same picture the right way round: a flip or a rotation would differ by far more.
    assert mean_abs_diff(upright, reference) < 4.0


@pytest.mark.parametrize("n", range(9))
def test_portrait_photos_come_out_portrait_whatever_their_exif_orientation(n: int) -> None:
    result = processed(testdata(f"orientation/Portrait_{n}.jpg"))
    # 1200x1800 is taller than 4:5: centre-cropped to 1200x1500.
    assert (result.width, result.height) == (1200, 1500)
    upright = decode(variant(result, "w320"))
    reference = decode(variant(processed(testdata("orientation/Portrait_1.jpg")), "w320"))
    assert upright.size == reference.size == (320, 400)
    assert mean_abs_diff(upright, reference) < 4.0


def test_a_misoriented_photo_would_be_caught_by_the_orientation_check() -> None:
    reference = decode(variant(processed(testdata("orientation/Landscape_1.jpg")), "w320"))
    mirrored = reference.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert mean_abs_diff(mirrored, reference) > 10.0


def test_every_variant_decodes_to_its_declared_format_size_and_mode() -> None:
    result = processed(testdata("orientation/Landscape_6.jpg"), "clarendon")
    assert sorted((v.name, v.content_type) for v in result.variants) == sorted(
        (name, ct)
        for name in ("w1080", "w640", "w320", "sq150")
        for ct in ("image/jpeg", "image/webp")
    )
    expected_sizes = {"w1080": (1080, 720), "w640": (640, 427), "w320": (320, 213)}
    expected_sizes["sq150"] = (150, 150)
    for v in result.variants:
        im = decode(v)
        assert im.format == {"image/jpeg": "JPEG", "image/webp": "WEBP"}[v.content_type]
        assert im.size == (v.width, v.height) == expected_sizes[v.name]
        assert im.mode == "RGB"


@pytest.mark.parametrize("relative", CAMERA_PHOTOS)
def test_no_exif_or_gps_survives_in_any_variant(relative: str) -> None:
    path = testdata(relative)
    with Image.open(path) as original:
        assert original.getexif().get_ifd(0x8825), "the test photo should carry GPS"
    for v in processed(path).variants:
        im = decode(v)
        assert not im.getexif(), v.name
        assert not {"exif", "xmp", "XML:com.adobe.xmp", "comment", "photoshop"} & set(im.info)
        assert b"Exif\x00\x00" not in v.data
        assert b"http://ns.adobe.com/xap" not in v.data


def test_orientation_6_camera_photo_is_turned_upright() -> None:
    result = processed(testdata("camera/canon_hdr_YES.jpg"))
    # Stored 2048x1536 with orientation 6: upright 1536x2048, clamped to 4:5.
    assert (result.width, result.height) == (1536, 1920)
    assert (variant(result, "w1080").width, variant(result, "w1080").height) == (1080, 1350)


def test_icc_profile_is_kept() -> None:
    path = testdata("large/string.jpg")
    with Image.open(path) as original:
        profile = original.info["icc_profile"]
    for v in processed(path).variants:
        assert decode(v).info.get("icc_profile") == profile, (v.name, v.content_type)


def _with_profile(profile: bytes) -> bytes:
    return encode(Image.new("RGB", (800, 600), (30, 140, 220)), "JPEG", icc_profile=profile)


@pytest.mark.parametrize("kind", ["padded sRGB", "junk"])
def test_a_huge_colour_profile_is_not_copied_into_every_variant(kind: str) -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    junk = srgb[:16] + b"RGB " + os.urandom(64)
    profile = (srgb if kind == "padded sRGB" else junk).ljust(2_000_000, b"\0")
    result = process_image(_with_profile(profile), "normal")
    for v in result.variants:
        assert len(v.data) < 50_000, (v.name, v.content_type)
        image = decode(v)
        assert "icc_profile" not in image.info
        r, g, b = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
        assert abs(r - 30) + abs(g - 140) + abs(b - 220) < 15, (v.name, (r, g, b))


def test_twenty_megapixel_jpeg_is_decoded_at_quarter_scale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requested: list[tuple[int, int] | None] = []
    original_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(
        self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None
    ) -> tuple[str, tuple[int, int, float, float]] | None:
        result = original_draft(self, mode, size)
        requested.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    result = process_image(testdata("large/Kleiber_by_Lukas_Baubkus.jpg").read_bytes(), "moon")
    # 6028x3391 at 1/4 is 1507x848: still wider than 1080, a quarter of the pixels' work.
    assert requested == [(1507, 848)]
    assert (result.width, result.height) == (6028, 3391)
    sizes = {(v.name, v.width, v.height) for v in result.variants}
    assert sizes == {
        ("w1080", 1080, 608),
        ("w640", 640, 360),
        ("w320", 320, 180),
        ("sq150", 150, 150),
    }
    for v in result.variants:
        assert decode(v).size == (v.width, v.height)


def test_opaque_rgba_png_keeps_its_colours() -> None:
    path = testdata("large/goldfish.png")
    result = processed(path)
    assert (result.width, result.height) == (3640, 2400)
    with Image.open(path) as original:
        expected = original.convert("RGB").resize((320, 211), Image.Resampling.LANCZOS)
    assert mean_abs_diff(decode(variant(result, "w320", "image/webp")), expected) < 6.0


def test_transparent_pixels_are_flattened_onto_white() -> None:
    with Image.open(testdata("large/goldfish.png")) as original:
        rgba = original.reduce(4)
    alpha = rgba.getchannel("A")
    alpha.paste(0, (0, 0, rgba.width // 2, rgba.height // 2))
    rgba.putalpha(alpha)
    result = process_image(encode(rgba, "PNG"), "normal")
    out = decode(variant(result, "w320"))
    assert out.getpixel((10, 10)) >= (250, 250, 250)  # type: ignore[operator]
    assert out.getpixel((out.width - 10, out.height - 10)) < (240, 240, 240)  # type: ignore[operator]


def test_gif_transparency_is_white_and_only_the_first_frame_is_used() -> None:
    first = Image.new("P", (200, 200), 1)
    first.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])
    first.paste(0, (0, 0, 100, 200))
    second = Image.new("P", (200, 200), 2)
    second.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])
    data = encode(first, "GIF", save_all=True, append_images=[second], transparency=0)
    out = decode(variant(process_image(data, "normal"), "w1080", "image/webp"))
    assert out.size == (200, 200)
    left, right = out.getpixel((20, 100)), out.getpixel((180, 100))
    assert isinstance(left, tuple)
    assert isinstance(right, tuple)
    assert min(left) > 245
    assert right[0] > 200
    assert right[2] < 60


def test_cmyk_and_sixteen_bit_grey_become_rgb() -> None:
    cmyk = Image.new("CMYK", (300, 300), (0, 255, 255, 0))  # pure red ink
    out = decode(variant(process_image(encode(cmyk, "JPEG"), "normal"), "w320"))
    pixel = out.getpixel((150, 150))
    assert isinstance(pixel, tuple)
    assert pixel[0] > 200
    assert pixel[1] < 60

    grey16 = Image.new("I;16", (300, 300), 0x8000)
    out = decode(variant(process_image(encode(grey16, "PNG"), "normal"), "w320"))
    pixel = out.getpixel((150, 150))
    assert isinstance(pixel, tuple)
    assert all(120 <= c <= 136 for c in pixel)


def test_panorama_is_clamped_and_not_upscaled() -> None:
    wide = Image.open(testdata("orientation/Landscape_1.jpg")).reduce(2).crop((0, 200, 900, 400))
    result = process_image(encode(wide, "JPEG", quality=90), "normal")
    assert (result.width, result.height) == (382, 200)
    assert (variant(result, "w1080").width, variant(result, "w1080").height) == (382, 200)
    assert (variant(result, "sq150").width, variant(result, "sq150").height) == (150, 150)


@pytest.mark.parametrize("relative", HEIC_PHOTOS)
def test_heic_from_phones_is_processed(relative: str) -> None:
    result = processed(testdata(relative))
    assert result.height > result.width
    w1080 = decode(variant(result, "w1080"))
    assert w1080.size == (1080, 1350)
    assert not w1080.getexif()


def test_damaged_jpeg_is_undecodable() -> None:
    with pytest.raises(UndecodableImage):
        process_image(testdata("invalid/corrupted.jpg").read_bytes(), "normal")


def test_truncated_jpeg_is_undecodable() -> None:
    data = testdata("orientation/Landscape_1.jpg").read_bytes()
    with pytest.raises(UndecodableImage):
        process_image(data[: len(data) // 2], "normal")


@pytest.mark.parametrize("relative", HEIC_PHOTOS)
def test_a_heic_cut_off_mid_transfer_is_undecodable(relative: str) -> None:
    # libheif itself would decode it, painting the missing tiles a flat green.
    data = testdata(relative).read_bytes()
    with pytest.raises(UndecodableImage, match=r"ends .* early"):
        process_image(data[: len(data) * 2 // 3], "normal")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        b"\xff\xd8\xff\xe0" + b"\x00" * 100,  # a JPEG header and nothing else
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
        b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64,
    ],
    ids=["empty", "text", "jpeg-header-only", "png-signature-only", "mp4"],
)
def test_garbage_is_undecodable(data: bytes) -> None:
    with pytest.raises(UndecodableImage):
        process_image(data, "normal")


def test_malformed_exif_does_not_break_processing() -> None:
    result = processed(testdata("invalid/invalid_exif_image01088.jpg"))
    # 425x120 is wider than 1.91:1: clamped to 229x120; only the fixed-size square is upscaled.
    assert (result.width, result.height) == (229, 120)
    assert {(v.name, v.width, v.height) for v in result.variants} == {
        ("w1080", 229, 120),
        ("w640", 229, 120),
        ("w320", 229, 120),
        ("sq150", 150, 150),
    }


def test_garbled_orientation_value_means_as_stored() -> None:
    photo = Image.open(testdata("orientation/Landscape_1.jpg")).reduce(4)
    exif = Image.Exif()
    exif[0x0112] = 42
    result = process_image(encode(photo, "JPEG", exif=exif), "normal")
    assert (result.width, result.height) == (450, 300)


def test_processing_is_deterministic() -> None:
    data = testdata("orientation/Portrait_6.jpg").read_bytes()
    first = process_image(data, "valencia")
    second = process_image(data, "valencia")
    assert first == second


def test_filter_is_applied_to_every_variant() -> None:
    plain = processed(testdata("orientation/Landscape_6.jpg"))
    moon = processed(testdata("orientation/Landscape_6.jpg"), "moon")
    assert plain.blurhash != moon.blurhash
    for v in moon.variants:
        r, _, b = decode(v).split()
        # WebP and JPEG subsample chroma, so grey comes back only nearly grey.
        assert ImageStat.Stat(ImageChops.difference(r, b)).mean[0] < 2.0, v.name
        colour = decode(variant(plain, v.name, v.content_type))
        assert mean_abs_diff(decode(v), colour) > 4.0


def test_unknown_filter_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        process_image(testdata("orientation/Landscape_1.jpg").read_bytes(), "no-such-filter")


def test_blurhash_is_valid_with_four_by_three_components() -> None:
    result = processed(testdata("orientation/Landscape_1.jpg"))
    assert blurhash.is_valid_blurhash(result.blurhash)
    assert len(result.blurhash) == 28


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("orientation/Landscape_6.jpg", ImageHeader(MediaType.JPEG, 1200, 1800)),
        ("large/goldfish.png", ImageHeader(MediaType.PNG, 3640, 2400)),
        ("heic/IMG_5195.HEIC", ImageHeader(MediaType.HEIC, 2566, 3313)),
        ("invalid/corrupted.jpg", ImageHeader(MediaType.JPEG, 3648, 2736)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_read_image_header(relative: str, expected: ImageHeader) -> None:
    assert read_image_header(testdata(relative)) == expected


@pytest.mark.parametrize(("fmt", "media_type"), [("GIF", MediaType.GIF), ("WEBP", MediaType.WEBP)])
def test_read_image_header_of_gif_and_webp(tmp_path: Path, fmt: str, media_type: MediaType) -> None:
    path = tmp_path / "picture"
    path.write_bytes(encode(Image.new("RGB", (33, 17)), fmt))
    assert read_image_header(path) == ImageHeader(media_type, 33, 17)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_read_image_header_reports_a_decompression_bomb_instead_of_tripping_on_it(
    tmp_path: Path,
) -> None:
    # 40000 x 40000 RGB: 1.6 gigapixels, far past Pillow's bomb threshold; decoding it
    # would need 4.8 GB.
    ihdr = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 2, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + _png_chunk(b"IEND", b"")
    )
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    assert read_image_header(path) == ImageHeader(MediaType.PNG, 40_000, 40_000)
    with pytest.raises(UndecodableImage):
        process_image(bomb, "normal")


@pytest.mark.parametrize(
    "data",
    [b"", b"plain text, not a picture", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"\x89PNG\r\n\x1a\n"],
    ids=["empty", "text", "jpeg-cut-in-header", "png-signature-only"],
)
def test_read_image_header_raises_for_garbage(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "upload"
    path.write_bytes(data)
    with pytest.raises(UndecodableImage):
        read_image_header(path)
