"""Stories: what a post row of kind `story` has beside it (its lifetime), who saw it, and the
highlights that keep stories on a profile after they expire."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from glimpse.db.base import Base, utcnow


class Story(Base):
    """One story. Its id is its post's: the photo, its processing and its media are the post's."""

    __tablename__ = "stories"
    __table_args__ = (
        # The tray: each followed account's live stories, a range of this index per account.
        Index("ix_stories_author_id_expires_at", "author_id", "expires_at"),
        # The reaper: expired stories whose public media is still up, oldest first.
        Index("ix_stories_archived_expires_at", "archived", "expires_at"),
    )

    id: Mapped[int] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    # Set by the reaper once the story has expired and its public media has been taken down
    # (unless a highlight holds it): from then on it lives in its author's archive only.
    archived: Mapped[bool] = mapped_column(default=False)


class StoryView(Base):
    """That an account saw a story, once. `id` is time-sortable: the viewer list's order."""

    __tablename__ = "story_views"
    __table_args__ = (Index("ix_story_views_story_id_id", "story_id", "id"),)

    story_id: Mapped[int] = mapped_column(
        ForeignKey("stories.id", ondelete="CASCADE"), primary_key=True
    )
    viewer_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[int]
    viewed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Highlight(Base):
    """A named set of its owner's stories, kept on the profile whether they expired or not."""

    __tablename__ = "highlights"
    __table_args__ = (Index("ix_highlights_owner_id_id", "owner_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class HighlightStory(Base):
    __tablename__ = "highlight_stories"
    # The reaper asks of each expired story whether any highlight holds it.
    __table_args__ = (Index("ix_highlight_stories_story_id", "story_id"),)

    highlight_id: Mapped[int] = mapped_column(
        ForeignKey("highlights.id", ondelete="CASCADE"), primary_key=True
    )
    story_id: Mapped[int] = mapped_column(
        ForeignKey("stories.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int]
