"""The feed marks table (migration 0013 keeps it, by triggers; feed/kept_pages.py reads it)."""

from __future__ import annotations

from sqlalchemy import BigInteger
from sqlalchemy.orm import Mapped, mapped_column

from glimpse.db.base import Base


class FeedMark(Base):
    """A counter per account, moved on in the same transaction as every change that can alter
    what a home feed's first page shows of the account or to it: follows and blocks, its posts'
    status and deletion, its own likes and comments, its name and privacy. An account without a
    row has mark 0."""

    __tablename__ = "feed_marks"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    mark: Mapped[int] = mapped_column(BigInteger)
