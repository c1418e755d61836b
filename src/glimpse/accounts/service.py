"""Accounts and tokens: the rules. Callers own the transaction; errors are domain errors.

Two use cases, `sign_up` and `sign_in`, run whole (hashing outside any transaction, then one
write) so that every way in (the API, the web app's forms) shares one implementation; they take
the container and own their transactions, as a route would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts import repository
from glimpse.accounts.models import AccessToken, User
from glimpse.accounts.schemas import USERNAME_PATTERN, ProfileUpdate
from glimpse.accounts.token_memo import TokenMemo, Version
from glimpse.accounts.tokens import hash_token, new_token
from glimpse.db.base import utcnow
from glimpse.db.database import Database
from glimpse.errors import Conflict, NotFound, Unauthenticated
from glimpse.ids import IdGenerator
from glimpse.privacy.repository import username_held

if TYPE_CHECKING:
    from glimpse.container import Container

_USERNAME = re.compile(USERNAME_PATTERN)


@dataclass(frozen=True)
class Authenticated:
    user: User
    token_id: int


async def ensure_username_free(session: AsyncSession, username: str) -> None:
    # An erased account's name stays taken for a while (privacy/erasure.py).
    if await repository.username_exists(session, username) or await username_held(
        session, username, utcnow()
    ):
        raise Conflict("That username is taken.", code="username_taken")


async def create_account(
    session: AsyncSession,
    ids: IdGenerator,
    *,
    username: str,
    password_hash: str,
    display_name: str | None,
) -> User:
    await ensure_username_free(session, username)
    user = User(
        id=ids.next_id(),
        username=username,
        display_name=display_name if display_name is not None else username,
        bio="",
        is_private=False,
        password_hash=password_hash,
        post_count=0,
        follower_count=0,
        following_count=0,
        created_at=utcnow(),
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent sign-up took the name between check and insert
        raise Conflict("That username is taken.", code="username_taken") from exc
    return user


async def sign_up(
    container: Container, *, username: str, password: str, display_name: str | None
) -> User:
    """Create an account with this password (hashed here, outside any transaction)."""
    async with container.db.read() as session:
        # Checked before hashing too, so that a taken name costs no argon2 round.
        await ensure_username_free(session, username)
    password_hash = await container.passwords.hash(password)
    async with container.db.write() as session:
        return await create_account(
            session,
            container.ids,
            username=username,
            password_hash=password_hash,
            display_name=display_name,
        )


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int


async def sign_in(
    container: Container, username: str, password: str, client_address: str
) -> IssuedToken:
    """Trade a username and password for a new bearer token, or raise Unauthenticated.

    Costs one argon2 verify whatever the username: an unknown one (or one no account can
    have) is verified against the hasher's dummy hash, so the answer takes as long as for a
    wrong password and response times do not tell which usernames exist. Failed attempts are
    limited per address and per account (throttling.SignInGuard says how the owner keeps a
    way in); once a budget is spent the answer is 429, before any password is looked at.
    """
    async with container.sign_ins.attempt(username, client_address) as attempt:
        async with container.db.read() as session:
            user = await find_user(session, username)
        # Verified outside any transaction: argon2 takes tens of milliseconds on purpose.
        verified = await container.passwords.verify(user.password_hash if user else None, password)
        # A disabled account is told what a wrong password is told, after the same work.
        if user is None or not verified or user.disabled_at is not None:
            attempt.failed()
            raise Unauthenticated("Wrong username or password.", code="invalid_credentials")
        attempt.succeeded()
    ttl = container.settings.token_ttl_seconds
    async with container.db.write() as session:
        token = issue_token(session, container.ids, user, ttl)
    return IssuedToken(token, ttl)


def issue_token(
    session: AsyncSession,
    ids: IdGenerator,
    user: User,
    ttl_seconds: int,
    now: datetime | None = None,
) -> str:
    now = now or utcnow()
    token = new_token()
    session.add(
        AccessToken(
            id=ids.next_id(),
            user_id=user.id,
            token_hash=hash_token(token),
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
    )
    return token


async def authenticate(db: Database, token: str) -> Authenticated:
    found = await repository.get_user_by_token_hash(db, hash_token(token), utcnow())
    if found is None:
        raise _invalid_token()
    return Authenticated(user=found[0], token_id=found[1])


async def authenticate_id(
    db: Database, token: str, memo: TokenMemo | None = None, version: Version | None = None
) -> int:
    """The id of the account `authenticate` would return, refused alike; with a memo, not
    looked up again while the database is quiet (accounts/token_memo.py). `version`: the
    database's version (Database.version) as the caller read it before this call, once for
    its whole request; None: read here."""
    token_hash = hash_token(token)
    if memo is not None and version is None:
        version = db.version()
    if memo is not None and version is not None:
        remembered = memo.get(token_hash, version)
        if remembered is not None:
            return remembered
    found = await repository.get_user_id_by_token_hash(db, token_hash, utcnow())
    if found is None:
        raise _invalid_token()
    user_id, expires_at = found
    if memo is not None and version is not None:
        memo.put(token_hash, version, user_id, expires_at)
    return user_id


def _invalid_token() -> Unauthenticated:
    return Unauthenticated("The token is missing, expired or revoked.", code="invalid_token")


async def revoke_token(session: AsyncSession, token_id: int) -> None:
    await repository.revoke_token(session, token_id, utcnow())


async def get_visible_user(session: AsyncSession, username: str) -> User:
    user = await find_user(session, username)
    if user is None:
        raise NotFound("No such user.", code="user_not_found")
    return user


async def find_user(session: AsyncSession, username: str) -> User | None:
    # A name no account can have is not looked up: it may hold bytes (say NUL) that a database
    # refuses in a query.
    if _USERNAME.fullmatch(username) is None:
        return None
    return await repository.get_user_by_username(session, username)


async def update_profile(session: AsyncSession, user_id: int, changes: ProfileUpdate) -> User:
    user = await repository.get_user(session, user_id)
    if user is None:  # deleted since its token was checked
        raise Unauthenticated("This account no longer exists.", code="invalid_token")
    if changes.display_name is not None:
        user.display_name = changes.display_name
    if changes.bio is not None:
        user.bio = changes.bio
    if changes.is_private is not None:
        user.is_private = changes.is_private
    return user
