"""The zip of a data export, written to a file a piece at a time: never whole in memory.

Layout (README.txt inside says the same to whoever opens it):

    account.json                  the profile
    posts.json, stories.json      each post or story: caption, dates, and per photo or video its
                                  alt text, size and the file below
    posts/<post id>/<n>.<ext>     the originals as uploaded (nth file of the post, from 1)
    stories/<story id>/1.<ext>
    highlights.json               each highlight: title, date, its stories' ids in order
    comments.json                 comments the account wrote
    likes.json                    posts the account liked
    followers.json, following.json

Others' comments on the account's posts are theirs, not the account's: they are not included.

Originals are stored uncompressed (JPEG, HEIC and MP4 do not shrink) and JSON deflated. A zip
archive allows one member open for writing at a time, so the JSON lists are spooled to files of
their own while the originals go in, and copied in at the end.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import shutil
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Select, select

from glimpse.accounts.models import User
from glimpse.backends.storage import ObjectMissing, Storage
from glimpse.db.database import Database
from glimpse.engagement.models import Comment, Like
from glimpse.graph.models import Follow
from glimpse.posts.models import Media, Post, PostKind
from glimpse.stories.models import Highlight, HighlightStory, Story

# A keyset query of the export: rows after the given key (what _batches pages through).
_Query = Select[*tuple[Any, ...]]

# Rows read per query: a batch of posts with their media is a few hundred objects at most.
READ_BATCH = 200
_COPY_CHUNK = 1024 * 1024

README = """\
Your Glimpse data, as it was when this archive was made.

account.json                 your profile
posts.json, stories.json     each post and story: caption, dates, and per photo or video its
                             alt text, size and the file it is in
posts/<post id>/<n>.<ext>    your originals, as you uploaded them
stories/<story id>/1.<ext>
highlights.json              your highlights: title, date and their stories' ids, in order
comments.json                the comments you wrote
likes.json                   the posts you liked
followers.json               who follows you
following.json               whom you follow
"""

_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/heic": "heic",
    "image/heif": "heif",
    "image/gif": "gif",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
    "video/webm": "webm",
}


def extension(media_type: str) -> str:
    known = _EXTENSIONS.get(media_type)
    if known:
        return known
    guessed = mimetypes.guess_extension(media_type) or ".bin"
    return guessed.lstrip(".")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


class _JsonList:
    """A JSON array written item by item to a spool file, added to the zip at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] = path.open("w", encoding="utf-8")
        self._file.write("[")
        self._count = 0

    def add(self, item: dict[str, Any]) -> None:
        self._file.write(",\n" if self._count else "\n")
        self._file.write(json.dumps(item, ensure_ascii=False))
        self._count += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.write("\n]\n")
            self._file.close()


class ExportWriter:
    """Builds one export's zip at `path` from the database and the store."""

    def __init__(self, db: Database, storage: Storage, user_id: int, path: Path) -> None:
        self.db = db
        self.storage = storage
        self.user_id = user_id
        self.path = path
        self._spool = path.parent / f"{path.name}.spool-{uuid.uuid4().hex}"
        self.files_written = 0

    async def write(self, exported_at: datetime) -> None:
        self._spool.mkdir()
        try:
            with zipfile.ZipFile(self.path, "w", allowZip64=True) as archive:
                _add_text(archive, "README.txt", README)
                lists = {
                    name: _JsonList(self._spool / f"{name}.json")
                    for name in (
                        "posts",
                        "stories",
                        "highlights",
                        "comments",
                        "likes",
                        "followers",
                        "following",
                    )
                }
                try:
                    account = await self._account(exported_at)
                    _add_text(archive, "account.json", json.dumps(account, indent=2))
                    await self._posts(archive, lists["posts"], PostKind.POST, "posts")
                    await self._posts(archive, lists["stories"], PostKind.STORY, "stories")
                    await self._highlights(lists["highlights"])
                    await self._comments(lists["comments"])
                    await self._likes(lists["likes"])
                    await self._follows(lists["followers"], followers=True)
                    await self._follows(lists["following"], followers=False)
                finally:
                    for spooled in lists.values():
                        spooled.close()
                for name, spooled in lists.items():
                    await asyncio.to_thread(
                        archive.write,
                        spooled.path,
                        f"{name}.json",
                        compress_type=zipfile.ZIP_DEFLATED,
                    )
        finally:
            await asyncio.to_thread(shutil.rmtree, self._spool, True)

    async def _account(self, exported_at: datetime) -> dict[str, Any]:
        async with self.db.read() as session:
            user = await session.get(User, self.user_id)
        if user is None:
            raise LookupError(f"account {self.user_id} is gone")
        return {
            "id": str(user.id),
            "username": user.username,
            "display_name": user.display_name,
            "bio": user.bio,
            "is_private": user.is_private,
            "created_at": _iso(user.created_at),
            "exported_at": _iso(exported_at),
        }

    async def _posts(
        self, archive: zipfile.ZipFile, out: _JsonList, kind: str, folder: str
    ) -> None:
        async for post, expires_at, media in self._post_batches(kind):
            item: dict[str, Any] = {
                "id": str(post.id),
                "caption": post.caption,
                "status": post.status,
                "filter": post.filter_name,
                "created_at": _iso(post.created_at),
            }
            if kind == PostKind.STORY:
                item["expires_at"] = _iso(expires_at)
            else:
                item["like_count"] = post.like_count
                item["comment_count"] = post.comment_count
            entries = []
            for m in media:
                name = f"{folder}/{post.id}/{m.position + 1}.{extension(m.original_type)}"
                stored = await self._copy_original(archive, m.original_key, name)
                entries.append(
                    {
                        "file": name if stored else None,
                        "kind": m.kind,
                        "content_type": m.original_type,
                        "alt_text": m.alt_text,
                        "width": m.width,
                        "height": m.height,
                        "duration_s": m.duration_s,
                        "bytes": m.original_bytes,
                    }
                )
            item["media"] = entries
            out.add(item)

    async def _post_batches(
        self, kind: str
    ) -> AsyncIterator[tuple[Post, datetime | None, list[Media]]]:
        def query(after: int) -> _Query:
            return (
                select(Post, Story.expires_at)
                .outerjoin(Story, Story.id == Post.id)
                .where(Post.author_id == self.user_id, Post.kind == kind, Post.id > after)
                .order_by(Post.id)
            )

        async for rows in self._batches(query, lambda row: row[0].id):
            media: dict[int, list[Media]] = {row[0].id: [] for row in rows}
            async with self.db.read() as session:
                found = await session.execute(
                    select(Media)
                    .where(Media.post_id.in_(list(media)))
                    .order_by(Media.post_id, Media.position)
                )
                for m in found.scalars():
                    media[m.post_id].append(m)
            for post, expires_at in rows:
                yield post, expires_at, media[post.id]

    async def _batches(
        self, query: Callable[[int], _Query], last_key: Callable[[Any], int]
    ) -> AsyncIterator[list[Any]]:
        """The rows of `query(after)`, READ_BATCH at a time, each batch read in a short session
        of its own (an export of thousands of rows never holds one read open throughout): keyset
        pagination, `after` being the key of the previous batch's last row (0 at first)."""
        after = 0
        while True:
            async with self.db.read() as session:
                rows = list(await session.execute(query(after).limit(READ_BATCH)))
            if rows:
                yield rows
            if len(rows) < READ_BATCH:
                return
            after = last_key(rows[-1])

    async def _copy_original(self, archive: zipfile.ZipFile, key: str, name: str) -> bool:
        """Copy one stored original into the archive, a megabyte at a time. False when the
        store no longer has it (the export goes on without it)."""
        local = self.storage.local_path(key)
        if local is not None:
            try:
                await asyncio.to_thread(
                    archive.write, local, name, compress_type=zipfile.ZIP_STORED
                )
            except FileNotFoundError:
                return False
            self.files_written += 1
            return True
        size = await self.storage.size(key)
        if size is None:
            return False
        try:
            chunks = await self.storage.open_range(key, 0, size)
        except ObjectMissing:
            return False
        with archive.open(_member(name, zipfile.ZIP_STORED), "w", force_zip64=True) as member:
            async for chunk in chunks:
                member.write(chunk)
        self.files_written += 1
        return True

    async def _highlights(self, out: _JsonList) -> None:
        def query(after: int) -> _Query:
            return (
                select(Highlight)
                .where(Highlight.owner_id == self.user_id, Highlight.id > after)
                .order_by(Highlight.id)
            )

        async for rows in self._batches(query, lambda row: row[0].id):
            held: dict[int, list[str]] = {row[0].id: [] for row in rows}
            async with self.db.read() as session:
                found = await session.execute(
                    select(HighlightStory.highlight_id, HighlightStory.story_id)
                    .where(HighlightStory.highlight_id.in_(list(held)))
                    .order_by(HighlightStory.highlight_id, HighlightStory.position)
                )
                for highlight_id, story_id in found:
                    held[highlight_id].append(str(story_id))
            for (h,) in rows:
                out.add(
                    {
                        "id": str(h.id),
                        "title": h.title,
                        "created_at": _iso(h.created_at),
                        "story_ids": held[h.id],
                    }
                )

    async def _comments(self, out: _JsonList) -> None:
        def query(after: int) -> _Query:
            return (
                select(Comment.id, Comment.post_id, Comment.text, Comment.created_at)
                .where(Comment.author_id == self.user_id, Comment.id > after)
                .order_by(Comment.id)
            )

        async for rows in self._batches(query, lambda row: row[0]):
            for comment_id, post_id, text, created_at in rows:
                out.add(
                    {
                        "id": str(comment_id),
                        "post_id": str(post_id),
                        "text": text,
                        "created_at": _iso(created_at),
                    }
                )

    async def _likes(self, out: _JsonList) -> None:
        def query(after: int) -> _Query:
            return (
                select(Like.post_id, Like.created_at)
                .where(Like.user_id == self.user_id, Like.post_id > after)
                .order_by(Like.post_id)
            )

        async for rows in self._batches(query, lambda row: row[0]):
            for post_id, created_at in rows:
                out.add({"post_id": str(post_id), "created_at": _iso(created_at)})

    async def _follows(self, out: _JsonList, *, followers: bool) -> None:
        mine = Follow.followee_id if followers else Follow.follower_id
        other = Follow.follower_id if followers else Follow.followee_id

        def query(after: int) -> _Query:
            return (
                select(Follow.id, User.username, User.display_name, Follow.created_at)
                .join(User, User.id == other)
                .where(mine == self.user_id, Follow.id > after)
                .order_by(Follow.id)
            )

        async for rows in self._batches(query, lambda row: row[0]):
            for _, username, display_name, since in rows:
                out.add({"username": username, "display_name": display_name, "since": _iso(since)})


def _member(name: str, compress_type: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=datetime.now().timetuple()[:6])
    info.compress_type = compress_type
    return info


def _add_text(archive: zipfile.ZipFile, name: str, text: str) -> None:
    archive.writestr(_member(name, zipfile.ZIP_DEFLATED), text)
