"""What erasures and exports leave in the database while their jobs work."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from glimpse.db.base import Base, utcnow


class AccountErasure(Base):
    """An account its owner asked to erase. The row outlives the account: it holds the old
    username for `erased_username_hold_days` (nobody can sign up as the person just gone and
    inherit their followers' trust), and says the erasure finished. No foreign key: the user
    row is the last thing the job deletes."""

    __tablename__ = "account_erasures"
    __table_args__ = (Index("ix_account_erasures_username", "username"),)

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    username: Mapped[str] = mapped_column(String(30))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    hold_until: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class ExportStatus:
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


class AccountExport(Base):
    """One "download your information" zip: pending while its job builds it, then ready (its
    file in the store under `key`) until `expires_at`, when the reaper deletes file and row."""

    __tablename__ = "account_exports"
    __table_args__ = (
        Index("ix_account_exports_user_id_id", "user_id", "id"),
        Index("ix_account_exports_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=ExportStatus.PENDING)
    key: Mapped[str | None] = mapped_column(String(255), default=None)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # Set when the export is finished (ready or failed): a week later it is reaped.
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
