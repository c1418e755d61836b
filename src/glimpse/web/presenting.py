"""How the pages show API.md's values: pure functions from a Post's or Story's media (the plain
JSON the API returns) to what a template writes. The same choices are made again in
static/app.js for the posts it adds while scrolling; keep the two in step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The widths a photo comes in (API.md), smallest first: a browser picks from them by `sizes`.
PHOTO_WIDTHS = ("w320", "w640", "w1080")
# The feed's column is at most 614 CSS pixels wide (static/app.css).
FEED_SIZES = "(max-width: 640px) 100vw, 614px"
# A grid cell is a third of a column at most 935 pixels wide.
GRID_SIZES = "(max-width: 640px) 33vw, 300px"

# Formats offered to the browser in order of preference; the <img> itself is the JPEG.
_SOURCE_TYPES = ("image/avif", "image/webp")


@dataclass(frozen=True)
class Source:
    type: str
    srcset: str


@dataclass(frozen=True)
class Picture:
    """A responsive <picture>: sources by format, a JPEG <img> with its own srcset, and the
    size the layout reserves for it before any byte of it arrives."""

    sources: tuple[Source, ...]
    src: str
    srcset: str
    width: int
    height: int
    alt: str
    blurhash: str


@dataclass(frozen=True)
class Video:
    poster: str
    sources: tuple[Source, ...]
    width: int
    height: int
    alt: str
    blurhash: str


def _srcset(variants: list[dict[str, Any]], content_type: str, names: tuple[str, ...]) -> str:
    chosen = [v for v in variants if v["content_type"] == content_type and v["name"] in names]
    chosen.sort(key=lambda v: int(v["width"]))
    # Two variants of the same width (a small photo is never upscaled) would make the browser
    # choose between equals: keep the first of each width.
    seen: set[int] = set()
    entries = []
    for v in chosen:
        if int(v["width"]) not in seen:
            seen.add(int(v["width"]))
            entries.append(f"{v['url']} {v['width']}w")
    return ", ".join(entries)


def _url(variants: list[dict[str, Any]], name: str, content_type: str) -> str:
    for v in variants:
        if v["name"] == name and v["content_type"] == content_type:
            return str(v["url"])
    return ""


def picture(media: dict[str, Any], names: tuple[str, ...] = PHOTO_WIDTHS) -> Picture:
    """A photo's <picture> from its variants of these names."""
    variants: list[dict[str, Any]] = media.get("variants") or []
    sources = tuple(
        Source(t, srcset) for t in _SOURCE_TYPES if (srcset := _srcset(variants, t, names))
    )
    jpeg = _srcset(variants, "image/jpeg", names)
    # The <img>'s own src: the middle width, what a browser without srcset shows.
    src = _url(variants, names[len(names) // 2], "image/jpeg") or _url(
        variants, names[0], "image/jpeg"
    )
    return Picture(
        sources=sources,
        src=src,
        srcset=jpeg,
        width=int(media.get("width") or 0),
        height=int(media.get("height") or 0),
        alt=str(media.get("alt_text") or ""),
        blurhash=str(media.get("blurhash") or ""),
    )


def thumbnail(media: dict[str, Any]) -> Picture:
    """A square grid thumbnail: `sq150`, and `w320` (cropped square by the page's CSS) where a
    cell is wider than 150 pixels."""
    if media.get("kind") == "video":
        # A video has no square: its poster, cropped square by the page's CSS.
        return picture(media, ("poster",))
    full = picture(media, ("sq150", "w320"))
    return Picture(
        sources=full.sources,
        src=_url(media.get("variants") or [], "sq150", "image/jpeg") or full.src,
        srcset=full.srcset,
        width=150,
        height=150,
        alt=full.alt,
        blurhash=full.blurhash,
    )


def video(media: dict[str, Any]) -> Video:
    variants: list[dict[str, Any]] = media.get("variants") or []
    sources = tuple(
        Source("video/mp4", url)
        for name in ("mp4_720", "mp4_480")
        if (url := _url(variants, name, "video/mp4"))
    )
    return Video(
        poster=_url(variants, "poster", "image/jpeg"),
        sources=sources,
        width=int(media.get("width") or 0),
        height=int(media.get("height") or 0),
        alt=str(media.get("alt_text") or ""),
        blurhash=str(media.get("blurhash") or ""),
    )


def initial(user: dict[str, Any]) -> str:
    """The letter an avatar shows: the display name's first, else the username's."""
    name = str(user.get("display_name") or user.get("username") or "?").strip()
    return (name[:1] or "?").upper()


def count_label(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"
