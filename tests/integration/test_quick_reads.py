"""Database.fetch, the quick read path of hot routes: the same rows as a session gives, on a
read-only connection, with errors the API maps as it maps a session's."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import OperationalError

from glimpse.accounts.models import User
from glimpse.db.base import utcnow
from glimpse.db.database import Database
from glimpse.db.migrate import upgrade_to_head


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    upgrade_to_head(url)
    database = Database(url)
    now = utcnow()
    async with database.write() as session:
        for i in range(5):
            session.add(
                User(
                    id=i + 1,
                    username=f"u{i}",
                    display_name="",
                    bio="",
                    is_private=i % 2 == 0,
                    password_hash="x",
                    post_count=0,
                    follower_count=0,
                    following_count=0,
                    created_at=now - timedelta(hours=i),
                )
            )
    yield database
    await database.dispose()


RECENT = (
    select(User.id, User.is_private, User.created_at)
    .where(User.created_at >= bindparam("since"), User.id.in_(bindparam("ids", expanding=True)))
    .order_by(User.id)
)


async def test_fetch_gives_the_rows_a_session_gives(db: Database) -> None:
    since = utcnow() - timedelta(hours=2, minutes=30)
    params = {"since": since, "ids": [1, 2, 3, 4, 5]}
    quick = await db.fetch(RECENT, params)
    async with db.read() as session:
        slow = [tuple(r) for r in await session.execute(RECENT, params)]
    assert [r[0] for r in quick] == [r[0] for r in slow] == [1, 2, 3]
    assert [bool(r[1]) for r in quick] == [r[1] for r in slow]


async def test_an_empty_in_list_matches_nothing(db: Database) -> None:
    assert await db.fetch(RECENT, {"since": utcnow() - timedelta(days=9), "ids": []}) == []


async def test_the_quick_connection_cannot_write(db: Database) -> None:
    with pytest.raises(OperationalError):
        await db.fetch(text("DELETE FROM users"))
    async with db.read() as session:
        assert (await session.execute(text("select count(*) from users"))).scalar_one() == 5


async def test_sqlite_errors_arrive_as_sqlalchemys_with_their_code(db: Database) -> None:
    # api/errors.py maps OperationalError by its SQLite code (busy, disk full, read-only...).
    with pytest.raises(OperationalError) as raised:
        await db.fetch(text("SELECT * FROM no_such_table"))
    assert isinstance(getattr(raised.value.orig, "sqlite_errorcode", None), int)


async def test_quick_reads_see_each_commit_before_and_after_a_checkpoint(db: Database) -> None:
    # The quick connection maps the database file (QUICK_MMAP_BYTES): a commit is first in the
    # WAL, then copied into that file by a checkpoint; the next quick read sees it either way.
    names = select(User.username).where(User.id.in_(bindparam("ids", expanding=True)))
    assert await db.fetch(names, {"ids": [1]}) == [("u0",)]
    for step in range(3):
        async with db.write() as session:
            await session.execute(
                text("UPDATE users SET username = :n WHERE id = 1"), {"n": f"renamed{step}"}
            )
        assert await db.fetch(names, {"ids": [1]}) == [(f"renamed{step}",)]
        with closing(sqlite3.connect(str(db.write_engine.url.database))) as other:
            (busy, _, _) = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0
        assert await db.fetch(names, {"ids": [1]}) == [(f"renamed{step}",)]
    connection = db._quick_connection()
    assert connection.execute("PRAGMA mmap_size").fetchone()[0] > 0


async def test_the_map_can_be_turned_off_and_reads_are_the_same(db: Database) -> None:
    # GLIMPSE_DATABASE_MMAP_BYTES=0: on a disk that fails reads, a mapped page ends the process
    # with SIGBUS where a read() is an error the API answers 503 (an attack saw the former).
    unmapped = Database(str(db.write_engine.url), mmap_bytes=0)
    try:
        assert unmapped._quick_connection().execute("PRAGMA mmap_size").fetchone()[0] == 0
        params = {"since": utcnow() - timedelta(days=9), "ids": [1, 2, 3]}
        assert await unmapped.fetch(RECENT, params) == await db.fetch(RECENT, params)
    finally:
        await unmapped.dispose()


@pytest.mark.parametrize("mapped", [0, 2**20])
def test_the_setting_reaches_the_quick_connection(tmp_path: Path, mapped: int) -> None:
    from glimpse.config import Settings
    from glimpse.container import build_container

    settings = Settings(data_dir=tmp_path, secret_key="k" * 32, database_mmap_bytes=mapped)
    upgrade_to_head(settings.resolved_database_url)
    container = build_container(settings, node_id=1)
    connection = container.db._quick_connection()
    assert connection.execute("PRAGMA mmap_size").fetchone()[0] == mapped
    connection.close()
