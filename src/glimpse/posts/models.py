from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from glimpse.db.base import Base, utcnow


class PostStatus:
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class MediaKind:
    IMAGE = "image"
    VIDEO = "video"


class PostKind:
    """A story is a post row too, so that it takes the same upload, processing, storage and
    media-origin path; every read of posts as posts (grids, feeds, likes) names the kind."""

    POST = "post"
    STORY = "story"


class Post(Base):
    __tablename__ = "posts"
    # kind before status: grids and feeds read `kind = 'post' AND status = 'ready'` from this
    # index alone, with stories (which may outnumber posts) out of the range.
    __table_args__ = (Index("ix_posts_author_kind_status_id", "author_id", "kind", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(
        String(8), default=PostKind.POST, server_default=PostKind.POST
    )
    caption: Mapped[str] = mapped_column(Text, default="")
    filter_name: Mapped[str] = mapped_column(String(32), default="normal")
    status: Mapped[str] = mapped_column(String(16), default=PostStatus.PROCESSING)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    like_count: Mapped[int] = mapped_column(default=0)
    comment_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Media(Base):
    """One photo or video of a post: its private original and, once processed, its variants."""

    __tablename__ = "media"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    position: Mapped[int]
    kind: Mapped[str] = mapped_column(String(8), default="image")
    status: Mapped[str] = mapped_column(String(16), default=PostStatus.PROCESSING)
    # Indexed: purges and the sweep of abandoned uploads ask whether a key is still used.
    original_key: Mapped[str] = mapped_column(String(255), index=True)
    original_type: Mapped[str] = mapped_column(String(64))
    original_bytes: Mapped[int]
    alt_text: Mapped[str] = mapped_column(Text, default="")
    width: Mapped[int | None] = mapped_column(default=None)
    height: Mapped[int | None] = mapped_column(default=None)
    blurhash: Mapped[str | None] = mapped_column(String(128), default=None)
    # Videos only: the processed length, and how far transcoding has got (percent) while it runs.
    duration_s: Mapped[float | None] = mapped_column(default=None)
    progress: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MediaVariant(Base):
    """A served rendition. Keys are content-addressed, so two media may share one key."""

    __tablename__ = "media_variants"

    media_id: Mapped[int] = mapped_column(
        ForeignKey("media.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    content_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    width: Mapped[int]
    height: Mapped[int]
    key: Mapped[str] = mapped_column(String(255), index=True)
    size_bytes: Mapped[int]


class UploadUsage(Base):
    """Uploads per account per UTC day, for the daily quotas. Kept apart from posts so that
    deleting a post does not hand its quota back."""

    __tablename__ = "upload_usage"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    uploads: Mapped[int] = mapped_column(default=0)
    bytes: Mapped[int] = mapped_column(default=0)


class ObjectDeletion(Base):
    """A stored object a purge has decided to delete and may not have deleted yet. The purge
    marks, commits, deletes (outside any transaction: a slow store never holds the database's
    write lock), then removes the mark; a processing job that records the same key meanwhile
    waits for the mark to go, then stores its file again."""

    __tablename__ = "object_deletions"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    marked_at: Mapped[datetime] = mapped_column(default=utcnow)
