"""Media type detection from leading bytes.

Uploads are classified by their content, never by their file name or the client's
Content-Type: both are attacker-controlled, and a wrong guess sends bytes to the
wrong decoder.
"""

from __future__ import annotations

import enum
import re


class MediaType(enum.StrEnum):
    """Media types Glimpse accepts; the value is the MIME type."""

    JPEG = "image/jpeg"
    PNG = "image/png"
    WEBP = "image/webp"
    HEIC = "image/heic"
    GIF = "image/gif"
    MP4 = "video/mp4"
    MOV = "video/quicktime"


SNIFF_BYTES: int = 64
"""How many leading bytes `sniff_media_type` needs to decide."""

_IMAGE_TYPES = frozenset(
    {MediaType.JPEG, MediaType.PNG, MediaType.WEBP, MediaType.HEIC, MediaType.GIF}
)

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


def sniff_media_type(head: bytes) -> MediaType | None:
    """Classify a file from its first `SNIFF_BYTES` bytes (magic numbers only).

    Returns None for anything Glimpse does not accept, including AVIF.
    """
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
    while True:
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
