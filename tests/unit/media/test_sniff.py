import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from glimpse.media.sniff import (
    SNIFF_BYTES,
    MediaType,
    is_image,
    is_video,
    iso_bmff_file_truncation,
    iso_bmff_truncation,
    jpeg_scan_damage,
    sniff_media_type,
)
from tests.conftest import CAMERA_PHOTOS, HEIC_PHOTOS, LARGE_JPEGS, ORIENTATION_PHOTOS, testdata


def _head(path: Path) -> bytes:
    with path.open("rb") as fp:
        return fp.read(SNIFF_BYTES)


def _encoded(fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, fmt, **params)
    return buf.getvalue()


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = b"ftyp" + major + b"\x00\x00\x02\x00" + b"".join(compatible)
    return (len(body) + 4).to_bytes(4, "big") + body + b"\x00\x00\x00\x08free"


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("orientation/Landscape_1.jpg", MediaType.JPEG),
        ("camera/iphone_hdr_YES.jpg", MediaType.JPEG),
        ("invalid/corrupted.jpg", MediaType.JPEG),
        ("large/goldfish.png", MediaType.PNG),
        ("heic/IMG_5195.HEIC", MediaType.HEIC),
        ("heic/iphone_13_pro_max.HEIC", MediaType.HEIC),
    ],
)
def test_real_files_are_sniffed_by_content(relative: str, expected: MediaType) -> None:
    assert sniff_media_type(_head(testdata(relative))) is expected


def test_png_renamed_jpg_is_png(tmp_path: Path) -> None:
    liar = tmp_path / "holiday.jpg"
    liar.write_bytes(testdata("large/goldfish.png").read_bytes()[:4096])
    assert sniff_media_type(_head(liar)) is MediaType.PNG


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("WEBP", MediaType.WEBP), ("GIF", MediaType.GIF), ("PNG", MediaType.PNG)],
)
def test_formats_written_by_pillow(fmt: str, expected: MediaType) -> None:
    assert sniff_media_type(_encoded(fmt)[:SNIFF_BYTES]) is expected


def test_text_zip_and_empty_are_not_media() -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", "hello")
    assert sniff_media_type(b"") is None
    assert sniff_media_type(b"hello, this is plain text and not a picture\n") is None
    assert sniff_media_type(archive.getvalue()[:SNIFF_BYTES]) is None
    assert sniff_media_type(b"<svg xmlns='http://www.w3.org/2000/svg'/>") is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (_ftyp(b"mp42", b"isommp42"), MediaType.MP4),
        (_ftyp(b"isom", b"isomiso2avc1mp41"), MediaType.MP4),
        (_ftyp(b"M4V ", b"M4V M4A mp42isom"), MediaType.MP4),
        (_ftyp(b"qt  ", b"qt  "), MediaType.MOV),
        (_ftyp(b"heic", b"mif1heic"), MediaType.HEIC),
        (_ftyp(b"mif1", b"mif1heic"), MediaType.HEIC),
        # AVIF lists the generic HEIF brands too; it must not pass as HEIC.
        (_ftyp(b"avif", b"avifmif1miafMA1B"), None),
        (_ftyp(b"mif1", b"avifmif1miaf"), None),
        (_ftyp(b"3gp4", b"3gp4"), None),
        # A brand past the end of the ftyp box is the next box's bytes, not a brand.
        (_ftyp(b"3gp4") + b"\x00\x00\x00\x0cfreemp42", None),
        (_ftyp(b"3gp4", b"3gp4") + b"\x00\x00\x00\x0cfreeqt  ", None),
    ],
)
def test_iso_bmff_brands(header: bytes, expected: MediaType | None) -> None:
    assert sniff_media_type(header[:SNIFF_BYTES]) is expected


# The start of a WebM file as libwebm and FFmpeg write it: the EBML header, DocType "webm".
_WEBM_HEAD = bytes.fromhex("1a45dfa39f4286810142f7810142f2810442f381084282847765626d42878104")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (_WEBM_HEAD, MediaType.WEBM),
        # Matroska that is not WebM (an .mkv): refused, as are text files named .mp4.
        (_WEBM_HEAD.replace(b"\x84webm", b"\x88matroska"), None),
        (b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\nsegment0.ts\n", None),
        (b"this is a text file that someone named video.mp4\n", None),
        (b"GIF89a" + b"\x00" * 40, MediaType.GIF),
    ],
)
def test_webm_and_what_only_pretends_to_be_video(head: bytes, expected: MediaType | None) -> None:
    assert sniff_media_type(head[:SNIFF_BYTES]) is expected


def test_video_types_are_video_and_not_images() -> None:
    assert {t for t in MediaType if is_video(t)} == {
        MediaType.MP4,
        MediaType.MOV,
        MediaType.WEBM,
    }
    assert not any(is_image(t) and is_video(t) for t in MediaType)


def test_only_image_types_are_images() -> None:
    assert {t for t in MediaType if is_image(t)} == {
        MediaType.JPEG,
        MediaType.PNG,
        MediaType.WEBP,
        MediaType.HEIC,
        MediaType.GIF,
    }


@pytest.mark.parametrize(
    "relative",
    ORIENTATION_PHOTOS + CAMERA_PHOTOS + LARGE_JPEGS + ["invalid/invalid_exif_image01088.jpg"],
)
def test_intact_jpegs_show_no_scan_damage(relative: str) -> None:
    assert jpeg_scan_damage(testdata(relative).read_bytes()) is None


def test_overwritten_scan_data_is_damage() -> None:
    damage = jpeg_scan_damage(testdata("invalid/corrupted.jpg").read_bytes())
    assert damage is not None
    assert "corrupt" in damage


def test_restart_markers_in_sequence_pass_and_a_lost_one_is_damage() -> None:
    photo = Image.open(testdata("orientation/Landscape_1.jpg")).reduce(4)
    for progressive in (False, True):
        data = _photo_bytes(photo, progressive=progressive)
        assert data.count(b"\xff\xd3") > 0
        assert jpeg_scan_damage(data) is None
        # Drop one restart marker: what a lost disk sector or a bad splice does.
        at = data.index(b"\xff\xd3")
        assert jpeg_scan_damage(data[:at] + data[at + 2 :]) is not None


def _photo_bytes(photo: Image.Image, *, progressive: bool) -> bytes:
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=85, progressive=progressive, restart_marker_rows=1)
    return buf.getvalue()


def _box(kind: bytes, payload: bytes, *, declared: int | None = None, wide: bool = False) -> bytes:
    if wide:
        return (1).to_bytes(4, "big") + kind + (16 + len(payload)).to_bytes(8, "big") + payload
    size = 8 + len(payload) if declared is None else declared
    return size.to_bytes(4, "big") + kind + payload


@pytest.mark.parametrize("relative", HEIC_PHOTOS)
def test_whole_heic_files_are_not_truncated(relative: str) -> None:
    assert iso_bmff_truncation(testdata(relative).read_bytes()) is None


@pytest.mark.parametrize(
    ("data", "truncated"),
    [
        (_box(b"ftyp", b"heic" * 3) + _box(b"mdat", b"x" * 100), False),
        (_box(b"ftyp", b"heic" * 3) + _box(b"mdat", b"x" * 100, wide=True), False),
        (_box(b"ftyp", b"heic" * 3) + _box(b"mdat", b"x" * 10, declared=0), False),  # to the end
        (_box(b"ftyp", b"heic" * 3) + _box(b"mdat", b"x" * 100) + b"\0\0", False),  # padding
        (_box(b"ftyp", b"heic" * 3) + _box(b"mdat", b"x" * 100)[:-1], True),
        (_box(b"ftyp", b"heic" * 3) + _box(b"mdat", b"x" * 100, wide=True)[:-1], True),
        (_box(b"ftyp", b"heic" * 3) + (1).to_bytes(4, "big") + b"mdat" + b"\0" * 4, True),
        (_box(b"ftyp", b"heic" * 3) + _box(b"mdat", b"", declared=3), True),  # impossible size
        # A 64-bit size past 4 GB, all 8 bytes of it: its low half alone (24) would fit.
        (
            _box(b"ftyp", b"heic" * 3)
            + (1).to_bytes(4, "big")
            + b"mdat"
            + (2**32 + 24).to_bytes(8, "big")
            + b"\0" * 8,
            True,
        ),
        # A 64-bit size smaller than its own 16-byte header.
        (
            _box(b"ftyp", b"heic" * 3) + (1).to_bytes(4, "big") + b"mdat" + (15).to_bytes(8, "big"),
            True,
        ),
    ],
)
def test_iso_bmff_truncation(data: bytes, truncated: bool, tmp_path: Path) -> None:
    assert (iso_bmff_truncation(data) is not None) is truncated
    # ... and a video on disk, read box header by box header, is judged the same.
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    assert (iso_bmff_file_truncation(path) is not None) is truncated


def test_only_brands_inside_the_ftyp_box_count() -> None:
    # An unknown major brand, no compatible brand: what follows the box (another box that
    # happens to spell a brand Glimpse takes) is not a brand, and the file is not a video.
    inside = _ftyp(b"xxxx")
    assert sniff_media_type(inside + b"\x00\x00\x00\x10mp42isomavc1") is None
    assert sniff_media_type(inside + b"mp42") is None
    # The same brand inside the box does count.
    assert sniff_media_type(_ftyp(b"xxxx", b"mp42")) is MediaType.MP4
    # A box that claims to be longer than what was read: only what was read counts.
    truncated = (64).to_bytes(4, "big") + b"ftypxxxx\x00\x00\x02\x00" + b"mp4"
    assert sniff_media_type(truncated) is None
