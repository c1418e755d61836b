"""`glimpse users create | disable | enable | reset-password`: accounts, from the operator's side.

The same rules as the API's (a username of API.md, a password of 8 to 256 characters), the
same hashing; what the API cannot do is here: turning an account off, and giving its owner a
new password when they lost theirs.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts import service
from glimpse.accounts.models import AccessToken, User
from glimpse.accounts.schemas import Password, Username
from glimpse.container import Container
from glimpse.db.base import utcnow
from glimpse.errors import Conflict
from glimpse.ops.backup import OperatorError

_USERNAME: TypeAdapter[str] = TypeAdapter(Username)
_PASSWORD: TypeAdapter[str] = TypeAdapter(Password)


def check_username(username: str) -> str:
    try:
        return _USERNAME.validate_python(username)
    except ValidationError:
        raise OperatorError(
            f"{username!r} cannot be a username: 1 to 30 of a-z, 0-9, '_' and '.', not a"
            " page of the site"
        ) from None


def check_password(password: str) -> str:
    try:
        return _PASSWORD.validate_python(password)
    except ValidationError:
        raise OperatorError("a password has 8 to 256 characters") from None


async def create_user(container: Container, username: str, password: str) -> User:
    check_username(username)
    check_password(password)
    try:
        return await service.sign_up(
            container, username=username, password=password, display_name=None
        )
    except Conflict:
        raise OperatorError(f"the username {username!r} is taken") from None


async def set_disabled(container: Container, username: str, disabled: bool) -> bool:
    """Disable (or enable again) an account. Disabling also revokes every token it holds (its
    API clients and web sessions). False when it already was so."""
    now = utcnow()
    async with container.db.write() as session:
        user = await _user(session, username)
        if (user.disabled_at is not None) == disabled:
            return False
        user.disabled_at = now if disabled else None
        if disabled:
            await _revoke_tokens(session, user.id, now)
    return True


async def reset_password(container: Container, username: str, password: str) -> None:
    """Give the account a new password, and sign it out everywhere."""
    check_password(password)
    async with container.db.read() as session:
        await _user(session, username)  # an unknown name costs no argon2 round
    password_hash = await container.passwords.hash(password)
    now = utcnow()
    async with container.db.write() as session:
        user = await _user(session, username)
        user.password_hash = password_hash
        await _revoke_tokens(session, user.id, now)


async def _user(session: AsyncSession, username: str) -> User:
    user = await service.find_user(session, username)
    if user is None:
        raise OperatorError(f"there is no account named {username!r}")
    return user


async def _revoke_tokens(session: AsyncSession, user_id: int, now: datetime) -> None:
    await session.execute(
        update(AccessToken)
        .where(AccessToken.user_id == user_id, AccessToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
