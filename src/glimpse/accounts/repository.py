"""All SQL of accounts and tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import AccessToken, User


async def get_user(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_username(session: AsyncSession, username: str) -> User | None:
    result = await session.execute(select(User).where(User.username == username))
    return result.scalar_one_or_none()


async def username_exists(session: AsyncSession, username: str) -> bool:
    result = await session.execute(select(User.id).where(User.username == username))
    return result.first() is not None


async def get_user_by_token_hash(
    session: AsyncSession, token_hash: str, now: datetime
) -> tuple[User, int] | None:
    result = await session.execute(
        select(User, AccessToken.id)
        .join(AccessToken, AccessToken.user_id == User.id)
        .where(
            AccessToken.token_hash == token_hash,
            AccessToken.revoked_at.is_(None),
            AccessToken.expires_at > now,
        )
    )
    row = result.first()
    return (row[0], row[1]) if row else None


async def revoke_token(session: AsyncSession, token_id: int, now: datetime) -> None:
    await session.execute(
        update(AccessToken)
        .where(AccessToken.id == token_id, AccessToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
