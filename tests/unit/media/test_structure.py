"""Files built to make decoders crawl, or to be published mostly grey, are refused before any
decoder runs; what real encoders write passes."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from glimpse.media.images import (
    TooComplexImage,
    UndecodableImage,
    check_file_structure,
    process_image,
)
from glimpse.media.sniff import (
    MAX_JPEG_SCANS,
    MAX_JPEG_SEGMENTS,
    MAX_PNG_OTHER_CHUNKS,
    check_structure,
)


def jpeg(size: tuple[int, int], **params: object) -> bytes:
    out = io.BytesIO()
    Image.effect_noise(size, 40).convert("RGB").save(out, "JPEG", **params)
    return out.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def scan_bomb(scans: int) -> bytes:
    """A progressive JPEG whose last scan is repeated until it has `scans` scans: the shape of
    the probe's 7000x7000 file of one 75-byte scan repeated 25,000 times."""
    out = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").save(out, "JPEG", progressive=True, quality=80)
    data = out.getvalue()
    last = data.rindex(b"\xff\xda")
    assert data.endswith(b"\xff\xd9")
    existing = data.count(b"\xff\xda")
    return data[:last] + data[last:-2] * (scans - existing + 1) + b"\xff\xd9"


def lying_jpeg(declared: tuple[int, int]) -> bytes:
    """A real 64x64 JPEG, properly ended, whose frame header declares another size."""
    data = bytearray(jpeg((64, 64), quality=90))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", declared[1], declared[0])
    return bytes(data)


def test_a_progressive_jpeg_has_far_fewer_scans_than_the_bound() -> None:
    assert jpeg((64, 64), progressive=True).count(b"\xff\xda") * 4 < MAX_JPEG_SCANS


def test_a_jpeg_with_up_to_the_bound_of_scans_passes() -> None:
    assert check_structure(scan_bomb(MAX_JPEG_SCANS)) is None


def test_a_jpeg_of_thousands_of_repeated_scans_is_too_complex() -> None:
    problem = check_structure(scan_bomb(25_000))
    assert problem is not None and problem.too_complex
    assert "scans" in problem.reason
    with pytest.raises(TooComplexImage, match="scans"):
        process_image(scan_bomb(MAX_JPEG_SCANS + 1), "normal")


def test_a_jpeg_with_more_segments_than_any_camera_is_too_complex() -> None:
    data = jpeg((64, 64))
    comments = b"\xff\xfe\x00\x04hi" * MAX_JPEG_SEGMENTS
    problem = check_structure(data[:2] + comments + data[2:])
    assert problem is not None and problem.too_complex


def test_a_jpeg_whose_data_ends_long_before_its_declared_size_is_undecodable() -> None:
    data = lying_jpeg((7000, 7000))
    assert len(data) < 5000
    problem = check_structure(data)
    assert problem is not None and not problem.too_complex
    with pytest.raises(UndecodableImage, match="pixels") as raised:
        process_image(data, "normal")
    assert not isinstance(raised.value, TooComplexImage)


def test_the_same_jpeg_declaring_its_true_size_passes() -> None:
    assert check_structure(lying_jpeg((64, 64))) is None


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("quality", [1, 50, 100])
@pytest.mark.parametrize("optimize", [False, True])
@pytest.mark.parametrize("progressive", [False, True])
def test_flat_colour_jpegs_of_any_quality_pass(
    mode: str, quality: int, optimize: bool, progressive: bool
) -> None:
    # The least data an encoder writes per pixel: one flat colour (measured: 2 bits per 8x8
    # block, 8 times the bound).
    out = io.BytesIO()
    Image.new(mode, (4000, 3000), "grey").save(
        out, "JPEG", quality=quality, optimize=optimize, progressive=progressive
    )
    assert check_structure(out.getvalue()) is None


def _png(idat: bytes = b"", extra: bytes = b"", idat_chunk: int = 8192) -> bytes:
    """A PNG's chunk layout (the structure check reads chunk headers, never their data)."""
    chunks = [idat[i : i + idat_chunk] for i in range(0, len(idat), idat_chunk)]
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 7000, 7000, 8, 2, 0, 0, 0))
        + extra
        + b"".join(png_chunk(b"IDAT", c) for c in chunks)
        + png_chunk(b"IEND", b"")
    )


def test_a_png_of_100k_empty_chunks_is_too_complex() -> None:
    problem = check_structure(_png(extra=png_chunk(b"zzZz", b"") * 100_000))
    assert problem is not None and problem.too_complex


def test_a_png_with_a_few_thousand_text_chunks_passes() -> None:
    extra = png_chunk(b"tEXt", b"k\x00v") * (MAX_PNG_OTHER_CHUNKS - 10)
    assert check_structure(_png(extra=extra)) is None


def test_image_data_in_many_chunks_passes_unless_they_are_tiny() -> None:
    data = random.Random(0).randbytes(5_000_000)
    assert check_structure(_png(data, idat_chunk=8192)) is None  # as libpng writes them
    assert check_structure(_png(data[:4000], idat_chunk=1)) is None  # a small image, oddly cut
    problem = check_structure(_png(data[:300_000], idat_chunk=2))
    assert problem is not None and problem.too_complex


def test_a_real_png_passes() -> None:
    out = io.BytesIO()
    Image.effect_noise((800, 600), 60).save(out, "PNG")
    assert check_structure(out.getvalue()) is None


def _with_junk_after_app0(junk: bytes) -> bytes:
    data = jpeg((64, 64))
    app0_end = 4 + int.from_bytes(data[4:6], "big")
    return data[:app0_end] + junk + data[app0_end:]


def test_a_few_stray_bytes_between_segments_pass() -> None:
    assert check_structure(_with_junk_after_app0(b"\x00" * 10 + b"\xff" * 10)) is None


def test_megabytes_of_junk_between_segments_are_too_complex() -> None:
    problem = check_structure(_with_junk_after_app0(b"\x00" * 5_000_000))
    assert problem is not None and problem.too_complex and "junk" in problem.reason


def test_a_spooled_file_is_checked_like_its_bytes(tmp_path: Path) -> None:
    cases = {
        "bomb": scan_bomb(1000),
        "liar": lying_jpeg((7000, 7000)),
        "fine": jpeg((64, 64)),
        "chunks": _png(extra=png_chunk(b"zzZz", b"") * 5000),
        "empty": b"",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert check_file_structure(path) == check_structure(data), name


# bytes after the end of the image do not count as image data.
async def test_a_lying_jpeg_with_a_large_trailer_is_still_refused() -> None:
    out = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(out, "JPEG", quality=90)
    data = bytearray(out.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 7000, 7000)
    problem = check_structure(bytes(data) + b"\x00" * (2 * 2**20))  # a trailer, never decoded
    assert problem is not None and not problem.too_complex
