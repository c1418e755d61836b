"""Image sizes read from the file's own header, without any decoder library.

The API reads an upload's size before accepting it, on its own threads: that read must cost
the same for every input. Decoder libraries do not promise that (Pillow took 11 s over a PNG of
3 million empty chunks and 3.8 s over a JPEG with 45 MB of junk before its frame header). These
parsers walk a few structures by their declared lengths, seeking over everything else, and give
up after a fixed number of steps: each reads at most a few kilobytes (`HEADER_READ_LIMIT`) and
runs in well under a millisecond, whatever the file holds.

They are deliberately stricter than the decoders: a header they cannot find within their bounds
is refused, though a lenient decoder might have found it further on.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

from glimpse.media.sniff import (
    MAX_JPEG_JUNK_BYTES,
    SNIFF_BYTES,
    MediaType,
    is_image,
    sniff_media_type,
)

# At most this many bytes are read from a file (the seeks over skipped data read nothing).
HEADER_READ_LIMIT = 256 * 1024

# JPEG: cameras write a dozen segments before the frame header (APP0/APP1 EXIF, APP2 ICC or MPF,
# DQT, DHT...); ICC profiles split over many APP2 segments are the longest runs seen, a few
# dozen. A few hundred is generous.
MAX_JPEG_HEADER_SEGMENTS = 300

# JPEG frame headers (SOFn); C4 (DHT), C8 (reserved) and CC (DAC) share the range but are not.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_NO_LENGTH_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and restart markers

# GIF: extension blocks before the first image (comments, application data, graphic control)
# and the data sub-blocks inside them, at most.
MAX_GIF_BLOCKS = 64
MAX_GIF_SUB_BLOCKS = 1024

# HEIC: the `meta` box that describes the items. Phones write one of a few KB (most of it the
# item locations of a 48-tile grid); the rest of the file is the coded image data.
MAX_HEIF_META_BYTES = 128 * 1024
MAX_HEIF_TOP_LEVEL_BOXES = 32
MAX_HEIF_CHILD_BOXES = 4096


class UnreadableHeader(ValueError):
    """The header is missing, malformed or outside the bounds above."""


@dataclass(frozen=True)
class HeaderSize:
    media_type: MediaType
    width: int
    height: int


class _BoundedReader:
    """Reads from a file, refusing to go past `HEADER_READ_LIMIT` bytes in total."""

    def __init__(self, fp: BinaryIO) -> None:
        self._fp = fp
        self._budget = HEADER_READ_LIMIT

    def read(self, n: int) -> bytes:
        if n > self._budget:
            raise UnreadableHeader("the header is longer than any real image's")
        data = self._fp.read(n)
        self._budget -= len(data)
        if len(data) < n:
            raise UnreadableHeader("the file ends inside its header")
        return data

    def skip(self, n: int) -> None:
        self._fp.seek(n, io.SEEK_CUR)

    def seek(self, offset: int) -> None:
        self._fp.seek(offset)

    def tell(self) -> int:
        return self._fp.tell()


def read_header_size(fp: BinaryIO) -> HeaderSize:
    """Media type and size of the image in `fp`, as decoders report it: the stored size for
    JPEG (EXIF orientation is applied later), and for HEIC the size after its own `irot`/`clap`.

    Raises UnreadableHeader when the file is not an image type Glimpse accepts or its header is
    malformed or beyond the bounds above.
    """
    fp.seek(0)
    media_type = sniff_media_type(fp.read(SNIFF_BYTES))
    if media_type is None or not is_image(media_type):
        raise UnreadableHeader("the file is not a JPEG, PNG, WebP, HEIC or GIF image")
    fp.seek(0)
    try:
        width, height = _READERS[media_type](_BoundedReader(fp))
    except UnreadableHeader:
        raise  # (a ValueError itself: said precisely where it was found)
    except IndexError as exc:  # a structure that runs past the bytes it was read into
        raise UnreadableHeader(f"the {media_type.name} header is cut short") from exc
    except (OSError, ValueError) as exc:  # a box or segment length no file can have (2^64)
        raise UnreadableHeader(
            f"the {media_type.name} header declares an impossible length"
        ) from exc
    if width <= 0 or height <= 0:
        raise UnreadableHeader(f"the {media_type.name} header declares an empty image")
    return HeaderSize(media_type, width, height)


def _be(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _le(data: bytes) -> int:
    return int.from_bytes(data, "little")


def _jpeg_size(r: _BoundedReader) -> tuple[int, int]:
    r.read(2)  # SOI
    junk = 0
    for _ in range(MAX_JPEG_HEADER_SEGMENTS):
        # A marker is 0xFF, any number of 0xFF fill bytes, then its code.
        while r.read(1)[0] != 0xFF:
            junk += 1
            if junk > MAX_JPEG_JUNK_BYTES:
                raise UnreadableHeader("the JPEG has junk between its segments")
        while (marker := r.read(1)[0]) == 0xFF:
            junk += 1
            if junk > MAX_JPEG_JUNK_BYTES:
                raise UnreadableHeader("the JPEG has junk between its segments")
        if marker in _NO_LENGTH_MARKERS or marker == 0x00:
            continue
        if marker in (0xD8, 0xD9, 0xDA):
            raise UnreadableHeader("the JPEG has no frame header before its image data")
        length = _be(r.read(2))
        if length < 2:
            raise UnreadableHeader("a JPEG segment declares an impossible length")
        if marker in _SOF_MARKERS:
            frame = r.read(5)  # precision, height, width
            height, width = _be(frame[1:3]), _be(frame[3:5])
            if height == 0:
                # Height defined later by a DNL marker: legal, unheard of outside fax machines.
                raise UnreadableHeader("the JPEG leaves its height to a DNL marker")
            return width, height
        r.skip(length - 2)
    raise UnreadableHeader("the JPEG has more segments before its frame header than any camera")


def _png_size(r: _BoundedReader) -> tuple[int, int]:
    head = r.read(8 + 8 + 8)  # signature, IHDR's length and type, width and height
    # The PNG specification puts IHDR first; decoders refuse files where it is not.
    if _be(head[8:12]) != 13 or head[12:16] != b"IHDR":
        raise UnreadableHeader("the PNG does not start with its IHDR chunk")
    width, height = _be(head[16:20]), _be(head[20:24])
    if width > 2**31 - 1 or height > 2**31 - 1:
        raise UnreadableHeader("the PNG declares an impossible size")
    return width, height


def _webp_size(r: _BoundedReader) -> tuple[int, int]:
    head = r.read(30)
    chunk, body = head[12:16], head[20:30]
    if chunk == b"VP8 ":
        # A key frame: 3-byte frame tag, start code, then 14-bit width and height.
        if body[3:6] != b"\x9d\x01\x2a":
            raise UnreadableHeader("the WebP's VP8 frame has no start code")
        return _le(body[6:8]) & 0x3FFF, _le(body[8:10]) & 0x3FFF
    if chunk == b"VP8L":
        if body[0] != 0x2F:
            raise UnreadableHeader("the WebP's VP8L data has no signature")
        bits = _le(body[1:5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return _le(body[4:7]) + 1, _le(body[7:10]) + 1
    raise UnreadableHeader("the WebP starts with no image chunk")


def _gif_size(r: _BoundedReader) -> tuple[int, int]:
    head = r.read(13)
    width, height, flags = _le(head[6:8]), _le(head[8:10]), head[10]
    if flags & 0x80:
        r.skip(3 << ((flags & 7) + 1))  # global colour table
    # Decoders grow the canvas to hold the first frame when it lies outside the logical screen.
    for _ in range(MAX_GIF_BLOCKS):
        introducer = r.read(1)[0]
        if introducer == 0x2C:  # image descriptor
            frame = r.read(8)
            left, top = _le(frame[0:2]), _le(frame[2:4])
            right, bottom = left + _le(frame[4:6]), top + _le(frame[6:8])
            return max(width, right), max(height, bottom)
        if introducer != 0x21:  # extension
            raise UnreadableHeader("the GIF has no image")
        r.read(1)  # extension label
        for _ in range(MAX_GIF_SUB_BLOCKS):
            size = r.read(1)[0]
            if size == 0:
                break
            r.skip(size)
        else:
            raise UnreadableHeader("a GIF extension is longer than any real one")
    raise UnreadableHeader("the GIF has more blocks before its first image than any real one")


# -- HEIF -------------------------------------------------------------------------------------
# The size of a HEIC is a property of its primary item: `meta` names the item (`pitm`) and
# associates it (`iprp/ipma`) with properties stored in `iprp/ipco`, among them its spatial
# extent (`ispe`) and any rotation (`irot`) and clean aperture (`clap`) to apply.


def _heif_boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, body start, body end) of the boxes laid side by side in data[start:end]."""
    boxes: list[tuple[bytes, int, int]] = []
    pos = start
    while pos + 8 <= end:
        if len(boxes) >= MAX_HEIF_CHILD_BOXES:
            raise UnreadableHeader("the HEIC has more boxes than any real one")
        size, kind, header = _be(data[pos : pos + 4]), data[pos + 4 : pos + 8], 8
        if size == 1:
            if pos + 16 > end:
                raise UnreadableHeader("a HEIC box is cut short")
            size, header = _be(data[pos + 8 : pos + 16]), 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise UnreadableHeader("a HEIC box declares an impossible size")
        boxes.append((kind, pos + header, pos + size))
        pos += size
    return boxes


def _heif_child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int]:
    for found, body, body_end in _heif_boxes(data, start, end):
        if found == kind:
            return body, body_end
    raise UnreadableHeader(f"the HEIC has no {kind.decode('latin-1')!r} box")


def _heif_meta(r: _BoundedReader) -> bytes:
    """The body of the top-level `meta` box, found by seeking over the other boxes."""
    r.seek(0)
    for _ in range(MAX_HEIF_TOP_LEVEL_BOXES):
        head = r.read(8)
        size, kind, header = _be(head[0:4]), head[4:8], 8
        if size == 1:
            size, header = _be(r.read(8)), 16
        if kind == b"meta":
            if size == 0 or size - header > MAX_HEIF_META_BYTES or size < header:
                raise UnreadableHeader("the HEIC's meta box is larger than any real one")
            return r.read(size - header)
        if size < header:
            raise UnreadableHeader("the HEIC has no meta box")
        r.skip(size - header)
    raise UnreadableHeader("the HEIC has more top-level boxes than any real one")


def _heif_size(r: _BoundedReader) -> tuple[int, int]:
    meta = _heif_meta(r)
    end = len(meta)
    start = 4  # meta is a full box: version and flags
    pitm, _ = _heif_child(meta, start, end, b"pitm")
    version = meta[pitm]
    primary = _be(meta[pitm + 4 : pitm + (8 if version else 6)])
    iprp, iprp_end = _heif_child(meta, start, end, b"iprp")
    ipco, ipco_end = _heif_child(meta, iprp, iprp_end, b"ipco")
    properties = _heif_boxes(meta, ipco, ipco_end)
    indices = _heif_associations(meta, iprp, iprp_end, primary)
    width = height = 0
    rotation = 0
    clap: tuple[int, int] | None = None
    for index in indices:
        if not 1 <= index <= len(properties):
            raise UnreadableHeader("the HEIC names a property it does not have")
        kind, body, body_end = properties[index - 1]
        if kind == b"ispe" and body + 12 <= body_end:
            width, height = _be(meta[body + 4 : body + 8]), _be(meta[body + 8 : body + 12])
        elif kind == b"irot" and body < body_end:
            rotation = meta[body] & 3
        elif kind == b"clap" and body + 16 <= body_end:
            # Clean aperture width and height are fractions; decoders round them down.
            num_w, den_w = _be(meta[body : body + 4]), _be(meta[body + 4 : body + 8])
            num_h, den_h = _be(meta[body + 8 : body + 12]), _be(meta[body + 12 : body + 16])
            if den_w and den_h:
                clap = (num_w // den_w, num_h // den_h)
    if clap is not None and 0 < clap[0] <= width and 0 < clap[1] <= height:
        width, height = clap
    if rotation in (1, 3):
        width, height = height, width
    return width, height


def _heif_associations(data: bytes, start: int, end: int, item: int) -> list[int]:
    """Indices (from 1) of the properties `ipma` associates with `item`."""
    body, body_end = _heif_child(data, start, end, b"ipma")
    version, flags = data[body], _be(data[body + 1 : body + 4])
    pos = body + 4
    count = _be(data[pos : pos + 4])
    pos += 4
    id_size = 2 if version < 1 else 4
    wide_index = bool(flags & 1)
    for _ in range(min(count, MAX_HEIF_CHILD_BOXES)):
        if pos + id_size + 1 > body_end:
            break
        item_id = _be(data[pos : pos + id_size])
        pos += id_size
        n = data[pos]
        pos += 1
        width = 2 if wide_index else 1
        if pos + n * width > body_end:
            break
        entries = [_be(data[pos + i * width : pos + (i + 1) * width]) for i in range(n)]
        pos += n * width
        if item_id == item:
            mask = 0x7FFF if wide_index else 0x7F  # the top bit says "essential"
            return [e & mask for e in entries]
    raise UnreadableHeader("the HEIC's primary image has no properties")


_READERS = {
    MediaType.JPEG: _jpeg_size,
    MediaType.PNG: _png_size,
    MediaType.WEBP: _webp_size,
    MediaType.GIF: _gif_size,
    MediaType.HEIC: _heif_size,
}
