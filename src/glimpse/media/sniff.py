"""Media type detection from leading bytes.

Uploads are classified by their content, never by their file name or the client's
Content-Type: both are attacker-controlled, and a wrong guess sends bytes to the
wrong decoder.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path


class MediaType(enum.StrEnum):
    """Media types Glimpse accepts; the value is the MIME type."""

    JPEG = "image/jpeg"
    PNG = "image/png"
    WEBP = "image/webp"
    HEIC = "image/heic"
    GIF = "image/gif"
    MP4 = "video/mp4"
    MOV = "video/quicktime"
    WEBM = "video/webm"


SNIFF_BYTES: int = 64
"""How many leading bytes `sniff_media_type` needs to decide."""

_IMAGE_TYPES = frozenset(
    {MediaType.JPEG, MediaType.PNG, MediaType.WEBP, MediaType.HEIC, MediaType.GIF}
)

_VIDEO_TYPES = frozenset({MediaType.MP4, MediaType.MOV, MediaType.WEBM})

_HEIC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_MP4_BRANDS = frozenset(
    {b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"dash", b"M4V "}
)
_MOV_BRANDS = frozenset({b"qt  "})
# AVIF files also list the generic HEIF brands (mif1, msf1) as compatible, so an AVIF
# brand anywhere vetoes the HEIC answer: we have no AV1 decoder in the pipeline.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})


def _brand_type(brand: bytes) -> MediaType | None:
    if brand in _HEIC_BRANDS:
        return MediaType.HEIC
    if brand in _MP4_BRANDS:
        return MediaType.MP4
    if brand in _MOV_BRANDS:
        return MediaType.MOV
    return None


def _sniff_iso_bmff(head: bytes) -> MediaType | None:
    box_size = int.from_bytes(head[0:4], "big")
    if box_size < 16:
        return None
    major = head[8:12]
    # Compatible brands follow the 4-byte minor version; only those inside the box
    # and inside what we were given count.
    end = min(box_size, len(head))
    compatible = [head[i : i + 4] for i in range(16, end - 3, 4)]
    brands = [major, *compatible]
    if any(brand in _AVIF_BRANDS for brand in brands):
        return None
    for brand in brands:
        found = _brand_type(brand)
        if found is not None:
            return found
    return None


# WebM is Matroska with the DocType "webm": the EBML header's magic, then (within its first
# few dozen bytes) the DocType element, ID 0x4282, a one-byte size 0x84, and the name.
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_WEBM_DOCTYPE = b"\x42\x82\x84webm"


def sniff_media_type(head: bytes) -> MediaType | None:
    """Classify a file from its first `SNIFF_BYTES` bytes (magic numbers only).

    Returns None for anything Glimpse does not accept, including AVIF, Matroska that is not
    WebM, and text such as an HLS playlist (whatever its name says).
    """
    if head.startswith(_EBML_MAGIC):
        return MediaType.WEBM if _WEBM_DOCTYPE in head else None
    if head.startswith(b"\xff\xd8\xff"):
        return MediaType.JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return MediaType.PNG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return MediaType.GIF
    if len(head) >= 12 and head[0:4] == b"RIFF" and head[8:12] == b"WEBP":
        return MediaType.WEBP
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return _sniff_iso_bmff(head)
    return None


def is_image(t: MediaType) -> bool:
    """Whether the type goes through the image pipeline (as opposed to video)."""
    return t in _IMAGE_TYPES


def is_video(t: MediaType) -> bool:
    return t in _VIDEO_TYPES


# Inside entropy-coded data an 0xFF byte is followed only by 0x00 (stuffing), 0xFF
# (fill), a restart marker (D0-D7) or a real marker (C0 and above). One regex pass
# collects the code after every 0xFF that is neither stuffing nor fill: few enough
# (markers and restarts only) to check in Python.
_JPEG_MARKER_CODES = re.compile(rb"\xff([^\x00\xff])")
_INVALID_CODE = re.compile(rb"[\x01-\xbf]")
_NOT_RESTART_OR_SCAN = bytes(c for c in range(256) if not (0xD0 <= c <= 0xD7 or c == 0xDA))
_RESTART_CYCLE = bytes(range(0xD0, 0xD8))
_EOI = b"\xd9"
_SOS = b"\xda"


def jpeg_scan_damage(data: bytes) -> str | None:
    """Describe damage in a JPEG's entropy-coded data, or None when none is visible.

    libjpeg recovers from a damaged scan with only a warning, which Pillow discards:
    the photo would be published with a grey or smeared band. This finds the two
    traces such damage leaves in the byte stream without decoding anything: a marker
    code that cannot occur, and restart markers out of sequence. Data it cannot walk
    (broken headers, truncation) is left to the decoder to reject.
    """
    pos, size = 2, len(data)
    for _ in range(MAX_JPEG_SEGMENTS):
        if pos + 4 > size or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xDA:
            break
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    else:
        return None  # (more segments than check_structure lets through: refused there)
    # Whatever follows the end of the image (a phone's second picture, trailers) is
    # never decoded, so it is not judged.
    codes = b"".join(_JPEG_MARKER_CODES.findall(data, pos)).split(_EOI, 1)[0]
    if _INVALID_CODE.search(codes):
        return "corrupt JPEG data: a marker that cannot occur inside image data"
    # Restart markers count D0..D7 cyclically, starting again at D0 in every scan.
    for scan in codes.translate(None, _NOT_RESTART_OR_SCAN).split(_SOS):
        if scan != (_RESTART_CYCLE * (len(scan) // 8 + 1))[: len(scan)]:
            return "corrupt JPEG data: restart markers out of sequence"
    return None


def iso_bmff_file_truncation(path: Path) -> str | None:
    """iso_bmff_truncation for a file on disk (a video of up to hundreds of MB): only the box
    headers are read, each found by seeking past the box before it."""
    size_on_disk = path.stat().st_size
    with path.open("rb") as file:
        offset = 0
        while offset + 8 <= size_on_disk:
            file.seek(offset)
            head = file.read(16)
            size = int.from_bytes(head[:4], "big")
            header = 8
            if size == 1:
                if len(head) < 16:
                    return "the file ends inside a box's header"
                size, header = int.from_bytes(head[8:16], "big"), 16
            elif size == 0:
                return None
            if size < header:
                return "a box declares an impossible size"
            if offset + size > size_on_disk:
                name = head[4:8].decode("latin-1")
                box = repr(name) if name.isascii() and name.isprintable() else "last"
                return f"the file ends {offset + size - size_on_disk} bytes early, inside its {box} box"
            offset += size
    return None


def iso_bmff_truncation(data: bytes) -> str | None:
    """Why an ISO BMFF file (HEIC) is cut short, or None when its top-level boxes all fit.

    libheif decodes a HEIC whose `mdat` was cut off without complaint, filling the missing
    tiles with flat colour; a phone upload cut off mid-transfer must fail instead. Each
    top-level box declares its size (32 bits, or 64 after a size of 1; 0 runs to the end).
    """
    offset = 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        header = 8
        if size == 1:
            if offset + 16 > len(data):
                return "the file ends inside a box's header"
            size, header = int.from_bytes(data[offset + 8 : offset + 16], "big"), 16
        elif size == 0:
            return None
        if size < header:
            return "a box declares an impossible size"
        if offset + size > len(data):
            box = data[offset + 4 : offset + 8].decode("latin-1")
            return f"the file ends {offset + size - len(data)} bytes early, inside its {box!r} box"
        offset += size
    return None  # (a few stray bytes after the last box are padding, not a missing picture)


# -- Structure: what no camera or editor writes, refused before any decoder runs ------------

# Progressive JPEGs have 10 scans in colour (6 in grey) as libjpeg and every camera write them;
# hand-tuned scan scripts (jpegtran, mozjpeg) stay under 20. Each scan makes the decoder pass
# over the whole coefficient buffer again, so a 7000x7000 file of 25,000 tiny scans costs
# minutes of CPU. 64 is several times anything real.
MAX_JPEG_SCANS = 64
# Markers with a length, in the whole first image: a dozen before the frame in camera files
# (more when an ICC profile is split), two or three per scan after it.
MAX_JPEG_SEGMENTS = 512
# libjpeg skips stray bytes between segments with a warning, one at a time. A real file has
# none, or a few from a sloppy editor; megabytes of them are there to make parsers crawl.
MAX_JPEG_JUNK_BYTES = 1024
# Huffman-coded JPEG data needs at least one bit per 8x8 block of its full-resolution component
# (a DC code; an image of one flat colour gets exactly that from an optimising encoder, and
# 2 bits from libjpeg at any quality). Declared pixels per byte of entropy-coded data past
# 2048, a quarter of a bit per block, mean the data ends long before the picture does: the
# decoder would paint the rest grey.
MAX_JPEG_PIXELS_PER_DATA_BYTE = 2048
# PNG: image data is often split into many IDAT chunks (libpng writes 8 KB each); anything else
# (text, colour, APNG frame control) comes in tens. Empty chunks and data chunks under 1 KB on
# average beyond a few thousand are a file built to make the decoder loop.
MAX_PNG_OTHER_CHUNKS = 4096
MAX_PNG_SMALL_DATA_CHUNKS = 4096
MIN_PNG_AVERAGE_DATA_CHUNK = 1024


@dataclass(frozen=True)
class StructureProblem:
    """Why a file is refused before decoding. `too_complex`: more structure than any camera
    writes (a file built to make decoders work for minutes); otherwise its data is short of
    what its header declares."""

    too_complex: bool
    reason: str


def check_structure(data: bytes) -> StructureProblem | None:
    """Refuse, without decoding, an image whose structure no real encoder produces.

    Runs in linear time with small constants (a regex pass over JPEG data, a walk of PNG chunk
    headers that stops at its bounds): milliseconds for the largest upload accepted. Formats
    other than JPEG and PNG pass unchecked (their decoders bound themselves).
    """
    media_type = sniff_media_type(data[:SNIFF_BYTES])
    if media_type is MediaType.JPEG:
        return _jpeg_structure(data)
    if media_type is MediaType.PNG:
        return _png_structure(data)
    return None


# A marker that ends entropy-coded data or starts a segment: 0xFF then anything but stuffing
# (00), fill (FF), restart markers (D0-D7) and codes that cannot occur (02-BF, left to
# jpeg_scan_damage).
_NEXT_MARKER = re.compile(rb"\xff([\x01\xc0-\xcf\xd8-\xfe])")
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_ARITHMETIC_FRAMES = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_structure(data: bytes) -> StructureProblem | None:
    size = len(data)
    pos, segments, scans, entropy_bytes, junk = 2, 0, 0, 0, 0
    pixels, arithmetic = 0, False
    while (marker := _NEXT_MARKER.search(data, pos)) is not None:
        code, at = marker[1][0], marker.start()
        junk += at - pos  # (0 when the segment before ended where it said it would)
        if junk > MAX_JPEG_JUNK_BYTES:
            return StructureProblem(True, "the JPEG has junk between its segments")
        if code == 0xD9:  # end of the (first) image; what follows is never decoded
            break
        if code in (0x01, 0xD8):
            pos = at + 2
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            return StructureProblem(
                True, f"the JPEG has more than {MAX_JPEG_SEGMENTS} segments; no camera writes that"
            )
        if at + 4 > size:
            break
        body = at + 4
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if code in _JPEG_FRAMES and body + 5 <= size:
            height = int.from_bytes(data[body + 1 : body + 3], "big")
            width = int.from_bytes(data[body + 3 : body + 5], "big")
            pixels, arithmetic = width * height, code in _ARITHMETIC_FRAMES
        if code == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                return StructureProblem(
                    True, f"the JPEG has more than {MAX_JPEG_SCANS} scans; no camera writes that"
                )
            start = at + 2 + length
            end_of_scan = _NEXT_MARKER.search(data, start)
            pos = end_of_scan.start() if end_of_scan is not None else size
            entropy_bytes += max(0, pos - start)
            continue
        pos = at + 2 + length
    # Arithmetic coding (which no browser displays and Pillow cannot write) codes a flat area
    # in almost nothing, so only Huffman-coded data is held to the bound.
    if not arithmetic and pixels > entropy_bytes * MAX_JPEG_PIXELS_PER_DATA_BYTE:
        return StructureProblem(
            False,
            f"the JPEG declares {pixels} pixels but holds only {entropy_bytes} bytes of image"
            " data, far less than any encoder writes for that size",
        )
    return None


def _png_structure(data: bytes) -> StructureProblem | None:
    size, pos = len(data), 8
    other = data_chunks = data_bytes = 0
    while pos + 8 <= size:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind in (b"IDAT", b"fdAT") and length > 0:
            data_chunks += 1
            data_bytes += length
            if (
                data_chunks > MAX_PNG_SMALL_DATA_CHUNKS
                and data_bytes < data_chunks * MIN_PNG_AVERAGE_DATA_CHUNK
            ):
                return StructureProblem(
                    True, "the PNG splits its image data into more tiny chunks than any encoder"
                )
        else:
            other += 1
            if other > MAX_PNG_OTHER_CHUNKS:
                return StructureProblem(
                    True, f"the PNG has more than {MAX_PNG_OTHER_CHUNKS} chunks besides its data"
                )
        if kind == b"IEND":
            break
        pos += 12 + length
    return None
