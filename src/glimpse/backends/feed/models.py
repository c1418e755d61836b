"""The embedded feed store's tables: one row per materialised feed, one per entry in it."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from glimpse.db.base import Base


class FeedRow(Base):
    """A materialised feed. Its entries are complete for ids >= `horizon_id` (older posts were
    trimmed away or never loaded, and are read from the posts table instead)."""

    __tablename__ = "feeds"
    __table_args__ = (Index("ix_feeds_read_at", "read_at"),)

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    horizon_id: Mapped[int] = mapped_column(BigInteger, default=0)
    # Entries added since the last trim, roughly (a replayed fan-out may count twice): when it
    # passes the cap by a margin the feed is trimmed back to the cap and this recounted.
    size: Mapped[int] = mapped_column(default=0)
    # Unix seconds: when the feed was built, and (to within an hour) last read.
    built_at: Mapped[float] = mapped_column(Float)
    read_at: Mapped[float] = mapped_column(Float)


class FeedEntry(Base):
    __tablename__ = "feed_entries"
    __table_args__ = {"sqlite_with_rowid": False}

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    post_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    author_id: Mapped[int] = mapped_column(BigInteger)
