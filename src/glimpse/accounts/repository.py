"""All SQL of accounts and tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import AccessToken, User
from glimpse.db.base import as_utc
from glimpse.db.database import Database


async def get_user(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def lock_active_user(session: AsyncSession, user_id: int) -> bool:
    """Whether the account may still act (it exists, and is neither disabled nor being erased),
    its row share-locked to the end of the transaction on PostgreSQL: an erasure or a disabling
    asked for meanwhile waits for what this transaction adds, and then finds it. For writes
    whose caller was authenticated long before (an upload's body takes minutes)."""
    rows = await session.execute(
        select(User.id)
        .where(User.id == user_id, User.disabled_at.is_(None))
        .with_for_update(read=True)
    )
    return rows.first() is not None


async def get_user_by_username(session: AsyncSession, username: str) -> User | None:
    result = await session.execute(select(User).where(User.username == username))
    return result.scalar_one_or_none()


async def username_exists(session: AsyncSession, username: str) -> bool:
    result = await session.execute(select(User.id).where(User.username == username))
    return result.first() is not None


# Every authenticated request runs this, so it goes through the quick path (Database.fetch).
_USER_COLUMNS = tuple(User.__table__.columns)
_TOKEN_USER = (
    select(*_USER_COLUMNS, AccessToken.id)
    .join(AccessToken, AccessToken.user_id == User.id)
    .where(
        AccessToken.token_hash == bindparam("hash"),
        AccessToken.revoked_at.is_(None),
        AccessToken.expires_at > bindparam("now"),
        User.disabled_at.is_(None),
    )
)


# The same look-up for a caller whose id is all a route needs (the home feed): no account
# object to build.
_TOKEN_USER_ID = (
    select(User.id, AccessToken.expires_at)
    .join(AccessToken, AccessToken.user_id == User.id)
    .where(
        AccessToken.token_hash == bindparam("hash"),
        AccessToken.revoked_at.is_(None),
        AccessToken.expires_at > bindparam("now"),
        User.disabled_at.is_(None),
    )
)


async def get_user_id_by_token_hash(
    db: Database, token_hash: str, now: datetime
) -> tuple[int, datetime | str] | None:
    """The id of the account behind a live token (what get_user_by_token_hash finds), and
    when the token expires (on SQLite's quick path, as the text stored)."""
    rows = await db.fetch(_TOKEN_USER_ID, {"hash": token_hash, "now": now})
    return (int(rows[0][0]), rows[0][1]) if rows else None


async def get_user_by_token_hash(
    db: Database, token_hash: str, now: datetime
) -> tuple[User, int] | None:
    """The account behind a live token, and the token's id. The User is a plain copy, bound
    to no session: enough to read, never to change (services load their own)."""
    rows = await db.fetch(_TOKEN_USER, {"hash": token_hash, "now": now})
    if not rows:
        return None
    *values, token_id = rows[0]
    fields: dict[str, object] = {}
    for column, value in zip(_USER_COLUMNS, values, strict=True):
        python_type = column.type.python_type
        if python_type is bool:
            value = bool(value)
        elif column.name == "created_at":
            value = as_utc(value)
        fields[column.key] = value
    return User(**fields), token_id


async def revoke_token(session: AsyncSession, token_id: int, now: datetime) -> None:
    await session.execute(
        update(AccessToken)
        .where(AccessToken.id == token_id, AccessToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
