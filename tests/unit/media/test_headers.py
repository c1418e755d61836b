"""The header parsers: the sizes decoders report, from a bounded read, refusing what no camera
writes instead of crawling through it."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from glimpse.media.headers import (
    HEADER_READ_LIMIT,
    MAX_JPEG_HEADER_SEGMENTS,
    MAX_JPEG_JUNK_BYTES,
    HeaderSize,
    UnreadableHeader,
    read_header_size,
)
from glimpse.media.sniff import MediaType
from tests.conftest import testdata


class CountingReader(io.BytesIO):
    """A file that counts the bytes read from it (seeks are free, like on disk)."""

    bytes_read = 0

    def read(self, n: int | None = -1) -> bytes:
        data = super().read(n)
        self.bytes_read += len(data)
        return data


def header_of(data: bytes) -> HeaderSize:
    return read_header_size(io.BytesIO(data))


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


_FORMATS = [
    ("JPEG", MediaType.JPEG, {"quality": 50}),
    ("JPEG", MediaType.JPEG, {"progressive": True}),
    ("PNG", MediaType.PNG, {}),
    ("WEBP", MediaType.WEBP, {"quality": 50}),
    ("WEBP", MediaType.WEBP, {"lossless": True}),
    ("GIF", MediaType.GIF, {}),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(_FORMATS),
    width=st.integers(1, 700),
    height=st.integers(1, 700),
    mode=st.sampled_from(["RGB", "RGBA", "L"]),
)
def test_sizes_are_those_pillow_reports(
    fmt: tuple[str, MediaType, dict[str, object]], width: int, height: int, mode: str
) -> None:
    name, media_type, params = fmt
    if name == "JPEG" and mode == "RGBA":
        mode = "RGB"
    data = encode(Image.new(mode, (width, height), "red"), name, **params)
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (width, height)
    assert header_of(data) == HeaderSize(media_type, width, height)


def test_webp_with_alpha_and_metadata_is_read_from_its_vp8x_chunk() -> None:
    data = encode(Image.new("RGBA", (301, 77)), "WEBP", exif=b"Exif\x00\x00II*\x00")
    assert data[12:16] == b"VP8X"
    assert header_of(data) == HeaderSize(MediaType.WEBP, 301, 77)


def test_a_gif_frame_outside_the_logical_screen_grows_it_as_decoders_do() -> None:
    data = bytearray(encode(Image.new("P", (40, 30)), "GIF"))
    data[6:10] = struct.pack("<HH", 10, 10)  # logical screen smaller than the frame
    with Image.open(io.BytesIO(bytes(data))) as im:
        assert im.size == (40, 30)
    assert header_of(bytes(data)) == HeaderSize(MediaType.GIF, 40, 30)


@pytest.mark.parametrize(
    ("path", "size"),
    [
        ("heic/IMG_5195.HEIC", (2566, 3313)),
        ("heic/iphone_13_pro_max.HEIC", (3024, 4032)),
        ("camera/iphone_hdr_YES.jpg", (3264, 2448)),
        ("large/Kleiber_by_Lukas_Baubkus.jpg", (6028, 3391)),
    ],
)
def test_camera_files(path: str, size: tuple[int, int]) -> None:
    data = testdata(path).read_bytes()
    header = header_of(data)
    assert (header.width, header.height) == size


def test_a_png_of_many_empty_chunks_is_read_from_ihdr_alone() -> None:
    # The shape of the probe's 3-million-chunk PNG, at 100k: IHDR is read and nothing after it.
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 7000, 7000, 8, 2, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + ihdr + png_chunk(b"zzZz", b"") * 100_000
    fp = CountingReader(data)
    assert read_header_size(fp) == HeaderSize(MediaType.PNG, 7000, 7000)
    assert fp.bytes_read <= 64 + 24


def test_a_png_whose_first_chunk_is_not_ihdr_is_refused() -> None:
    data = encode(Image.new("RGB", (5, 5)), "PNG")
    with pytest.raises(UnreadableHeader):
        header_of(data[:8] + png_chunk(b"tEXt", b"a\x00b") + data[8:])


def _jpeg_with(before_frame: bytes) -> bytes:
    """A JPEG with these bytes after its first segment (JFIF's APP0)."""
    data = encode(Image.new("RGB", (64, 48)), "JPEG")
    app0_end = 4 + int.from_bytes(data[4:6], "big")
    return data[:app0_end] + before_frame + data[app0_end:]


def test_a_jpeg_with_junk_between_segments_is_read_within_the_bound() -> None:
    assert header_of(_jpeg_with(b"\x00" * 10)) == HeaderSize(MediaType.JPEG, 64, 48)
    assert header_of(_jpeg_with(b"\xff" * 10)) == HeaderSize(MediaType.JPEG, 64, 48)


def test_a_jpeg_with_megabytes_of_junk_before_its_frame_is_refused_after_a_small_read() -> None:
    fp = CountingReader(_jpeg_with(b"\x00" * 5_000_000))
    with pytest.raises(UnreadableHeader, match="junk"):
        read_header_size(fp)
    assert fp.bytes_read <= MAX_JPEG_JUNK_BYTES + 64 + 16


def test_a_jpeg_with_more_segments_than_any_camera_is_refused() -> None:
    comment = b"\xff\xfe\x00\x03x"
    assert header_of(_jpeg_with(comment * 200)).width == 64
    with pytest.raises(UnreadableHeader, match="segments"):
        header_of(_jpeg_with(comment * MAX_JPEG_HEADER_SEGMENTS))


def test_large_segments_are_seeked_over_not_read() -> None:
    fp = CountingReader(_jpeg_with((b"\xff\xe1\xff\xff" + b"\x00" * 0xFFFD) * 100))
    assert read_header_size(fp).width == 64
    assert fp.bytes_read < 4096


def test_a_jpeg_whose_image_data_starts_before_any_frame_header_is_refused() -> None:
    with pytest.raises(UnreadableHeader):
        header_of(b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 100)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        b"\xff\xd8\xff\xe0\x00\x10JFIF",
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    ],
)
def test_truncated_or_foreign_files_are_refused(data: bytes) -> None:
    with pytest.raises(UnreadableHeader):
        header_of(data)


def _seeds() -> list[bytes]:
    image = Image.new("RGB", (20, 10))
    return [
        encode(image, "JPEG"),
        encode(image, "PNG"),
        encode(image, "GIF"),
        encode(image, "WEBP"),
        testdata("heic/IMG_5195.HEIC").read_bytes()[:8192],
    ]


@settings(max_examples=400, deadline=None)
@given(
    seed=st.sampled_from(_seeds()),
    edits=st.lists(st.tuples(st.integers(0, 8191), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 8192),
)
def test_damaged_headers_raise_only_unreadable_header_and_read_little(
    seed: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(seed)
    for at, value in edits:
        if at < len(data):
            data[at] = value
    fp = CountingReader(bytes(data[: max(cut, 12)]))
    try:
        header = read_header_size(fp)
    except UnreadableHeader:
        pass
    else:
        assert header.width > 0 and header.height > 0
    assert fp.bytes_read <= HEADER_READ_LIMIT + 64
