"""Posts as API.md shows them, built from plain rows in a few statements.

Every list of posts (a post, a profile grid, a page of the feed) goes through `post_views`: four
statements for any number of posts (authors, media, variants, the viewer's likes), read through
the quick path (Database.fetch) or, inside a transaction that has not committed yet (a new
upload's answer), through its session. `PostRow` is the plain value a view is made of, so hot
paths need not build ORM objects for posts they only show.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Executable, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import User
from glimpse.db.base import as_utc
from glimpse.db.database import Database
from glimpse.engagement.models import Like
from glimpse.media.images import AVIF
from glimpse.media.urls import MediaUrls
from glimpse.posts.models import Media, MediaKind, MediaVariant, Post, PostStatus
from glimpse.posts.schemas import PostOut

if TYPE_CHECKING:  # (backends/summaries keeps its first level in a MediaViewCache, below)
    from glimpse.backends.summaries import PostSummaryCache

_VARIANT_ORDER = {
    "story": 0,
    "w1080": 1,
    "w640": 2,
    "w320": 3,
    "sq150": 4,
    "mp4_story": 5,
    "mp4_720": 6,
    "mp4_480": 7,
    "poster": 8,
}
# Within one name, the format every client can show first: a client that takes the first
# `w1080` it finds keeps getting the JPEG it always got.
_TYPE_ORDER = {"image/jpeg": 0, "image/webp": 1, AVIF: 2}


@dataclass(frozen=True)
class PostRow:
    id: int
    author_id: int
    caption: str
    filter_name: str
    status: str
    error_code: str | None
    error_message: str | None
    like_count: int
    comment_count: int
    created_at: datetime

    @classmethod
    def of(cls, post: Post) -> PostRow:
        return cls(*(getattr(post, name) for name in POST_COLUMN_NAMES))

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> PostRow:
        values = list(row)
        values[-1] = as_utc(values[-1])
        return cls(*values)


POST_COLUMN_NAMES = (
    "id",
    "author_id",
    "caption",
    "filter_name",
    "status",
    "error_code",
    "error_message",
    "like_count",
    "comment_count",
    "created_at",
)
# The columns of PostRow, in its order: `select(*POST_COLUMNS)` reads rows for PostRow.from_row.
POST_COLUMNS = tuple(getattr(Post, name) for name in POST_COLUMN_NAMES)


_AUTHORS = select(User.id, User.username, User.display_name, User.is_private).where(
    User.id.in_(bindparam("ids", expanding=True))
)
_MEDIA = (
    select(
        Media.id,
        Media.post_id,
        Media.kind,
        Media.width,
        Media.height,
        Media.blurhash,
        Media.alt_text,
        Media.duration_s,
        Media.progress,
    )
    .where(Media.post_id.in_(bindparam("ids", expanding=True)))
    .order_by(Media.post_id, Media.position)
)
_VARIANTS = select(
    MediaVariant.media_id,
    MediaVariant.name,
    MediaVariant.content_type,
    MediaVariant.width,
    MediaVariant.height,
    MediaVariant.key,
).where(MediaVariant.media_id.in_(bindparam("ids", expanding=True)))
_LIKED = select(Like.post_id).where(
    Like.user_id == bindparam("viewer"), Like.post_id.in_(bindparam("ids", expanding=True))
)


async def fetch_rows(
    source: Database | AsyncSession, statement: Executable, params: Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    if isinstance(source, Database):
        return await source.fetch(statement, params)
    return [tuple(row) for row in await source.execute(statement, dict(params))]


class MediaViewCache:
    """The media part of public posts' views, per process. A ready post's media and variants
    change once at most: its photos gain their AVIF copies a moment after it is ready (posts/
    avif.py). Public media has plain URLs (the same for every viewer), so a hot post costs no
    media reads at all. Only consulted for posts the caller has just checked may be seen, and
    only while the author is public (private media's URLs are signed per viewer).

    A view whose photos still lack AVIF copies (while they are made here: `expect_avif`) is
    kept for `unfinished_seconds` only, so the copies are listed within that of being made."""

    def __init__(
        self,
        max_posts: int = 20_000,
        *,
        expect_avif: bool = False,
        unfinished_seconds: float = 10.0,
    ) -> None:
        self._max = max_posts
        self._expect_avif = expect_avif
        self.unfinished_seconds = unfinished_seconds
        # post id -> (media views, monotonic time after which they are not used; None: never)
        self._entries: OrderedDict[int, tuple[list[dict[str, Any]], float | None]] = OrderedDict()

    def get(self, post_id: int) -> list[dict[str, Any]] | None:
        entry = self._entries.get(post_id)
        if entry is None:
            return None
        media, until = entry
        if until is not None and time.monotonic() >= until:
            del self._entries[post_id]
            return None
        self._entries.move_to_end(post_id)
        return media

    def put(self, post_id: int, media: list[dict[str, Any]]) -> None:
        until = None
        if self.is_unfinished(media):
            until = time.monotonic() + self.unfinished_seconds
        self._entries[post_id] = (media, until)
        self._entries.move_to_end(post_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def drop(self, post_id: int) -> None:
        self._entries.pop(post_id, None)

    def is_unfinished(self, media: list[dict[str, Any]]) -> bool:
        """Whether these photos still lack AVIF copies that are being made here."""
        return self._expect_avif and lacks_avif(media)


def lacks_avif(media: list[dict[str, Any]]) -> bool:
    """Whether some photo among these Media views has no AVIF copies (yet)."""
    return not all(_has_avif(m) for m in media if m["kind"] == "image")


def _has_avif(media: dict[str, Any]) -> bool:
    return any(v["content_type"] == AVIF for v in media["variants"])


async def post_views(
    source: Database | AsyncSession,
    posts: Sequence[PostRow],
    viewer_id: int,
    media_urls: MediaUrls,
    cache: PostSummaryCache | None = None,
) -> list[PostOut]:
    """Posts as API.md shows them, as models."""
    data = await post_view_data(source, posts, viewer_id, media_urls, cache)
    return [PostOut.model_validate(view) for view in data]


async def post_view_data(
    source: Database | AsyncSession,
    posts: Sequence[PostRow],
    viewer_id: int,
    media_urls: MediaUrls,
    cache: PostSummaryCache | None = None,
) -> list[dict[str, Any]]:
    """Posts as API.md shows them, as the JSON values of PostOut (ids as strings, times in
    RFC 3339): what a hot route serialises directly, with no model in between.

    `cache` holds the media of public ready posts (backends/summaries): asked once per page,
    only for the posts given here, which the caller has just found visible, and only while the
    author is public as read here. Everything else is read from the database each time."""
    if not posts:
        return []
    post_ids = [p.id for p in posts]
    authors = {
        row[0]: row
        for row in await fetch_rows(source, _AUTHORS, {"ids": sorted({p.author_id for p in posts})})
    }

    def is_public(post: PostRow) -> bool:
        # As media_visibility judges it for the origin: plain URLs only for what anyone may see.
        return post.status == PostStatus.READY and not authors[post.author_id][3]

    media: dict[int, list[dict[str, Any]]] = {}
    public = [p.id for p in posts if is_public(p)]
    if cache is not None and public:
        media.update(await cache.get_many(public))
    missing = [p for p in posts if p.id not in media]
    if missing:
        media.update(await _media_of(source, missing, is_public, viewer_id, media_urls))
        if cache is not None:
            await cache.put_many({p.id: media[p.id] for p in missing if is_public(p)})
    liked = {
        row[0] for row in await fetch_rows(source, _LIKED, {"ids": post_ids, "viewer": viewer_id})
    }
    views = []
    for post in posts:
        _, username, display_name, _ = authors[post.author_id]
        view: dict[str, Any] = {
            "id": str(post.id),
            "author": {
                "id": str(post.author_id),
                "username": username,
                "display_name": display_name,
            },
            "caption": post.caption,
            "filter": post.filter_name,
            "status": post.status,
            "created_at": rfc3339(post.created_at),
            "like_count": post.like_count,
            "comment_count": post.comment_count,
            "liked_by_me": post.id in liked,
            "media": media[post.id],
        }
        if post.error_code:  # (API.md: `error?`, only on failed posts)
            view["error"] = {"code": post.error_code, "message": post.error_message or ""}
        views.append(view)
    return views


def rfc3339(value: datetime) -> str:
    # As pydantic writes a UTC datetime (PostOut.created_at), so both paths agree.
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def _media_of(
    source: Database | AsyncSession,
    posts: Sequence[PostRow],
    is_public: Callable[[PostRow], bool],
    viewer_id: int,
    media_urls: MediaUrls,
) -> dict[int, list[dict[str, Any]]]:
    public = {post.id: is_public(post) for post in posts}
    return await media_views_of(
        source,
        [post.id for post in posts],
        lambda post_id, key: media_urls.url(key, public=public[post_id], viewer=viewer_id),
    )


async def media_views_of(
    source: Database | AsyncSession,
    post_ids: Sequence[int],
    url_of: Callable[[int, str], str | None],
) -> dict[int, list[dict[str, Any]]]:
    """The Media views of these posts (or stories), in order; `url_of(post id, key)` says
    where each variant is fetched, or None to leave that variant out."""
    media_by_post: dict[int, list[tuple[Any, ...]]] = {post_id: [] for post_id in post_ids}
    for row in await fetch_rows(source, _MEDIA, {"ids": list(post_ids)}):
        media_by_post[row[1]].append(row)
    media_ids = [row[0] for rows in media_by_post.values() for row in rows]
    variants: dict[int, list[tuple[Any, ...]]] = {}
    if media_ids:
        for row in await fetch_rows(source, _VARIANTS, {"ids": media_ids}):
            variants.setdefault(row[0], []).append(row)
    return {
        post_id: [_media_view(m, variants.get(m[0], []), post_id, url_of) for m in rows]
        for post_id, rows in media_by_post.items()
    }


def _media_view(
    media: tuple[Any, ...],
    variants: list[tuple[Any, ...]],
    post_id: int,
    url_of: Callable[[int, str], str | None],
) -> dict[str, Any]:
    _, _, kind, width, height, blurhash, alt_text, duration_s, progress = media
    ordered = sorted(
        variants, key=lambda v: (_VARIANT_ORDER.get(v[1], 99), _TYPE_ORDER.get(v[2], 9), v[2])
    )
    views = []
    for _, name, content_type, w, h, key in ordered:
        url = url_of(post_id, key)
        if url is not None:
            views.append(
                {"name": name, "width": w, "height": h, "content_type": content_type, "url": url}
            )
    view: dict[str, Any] = {
        "kind": kind,
        "width": width,
        "height": height,
        "blurhash": blurhash,
        "alt_text": alt_text,
        "variants": views,
    }
    if kind == MediaKind.VIDEO:
        # API.md's `duration_s?` (known from the container at upload, exact once transcoded),
        # and how far transcoding has got while the post is processing.
        view["duration_s"] = duration_s
        if progress is not None:
            view["progress"] = progress
    return view
