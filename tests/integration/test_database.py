"""The SQLite file that several processes share."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from glimpse.db.database import Database
from glimpse.db.migrate import upgrade_to_head


def test_a_migrated_file_is_already_in_wal_mode(tmp_path: Path) -> None:
    # Switching modes takes an exclusive lock; processes opening the file together must not have to.
    path = tmp_path / "glimpse.db"
    upgrade_to_head(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.parametrize(("setting", "pragma"), [("FULL", 2), ("NORMAL", 1)])
async def test_commits_sync_as_the_settings_say(tmp_path: Path, setting: str, pragma: int) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'glimpse.db'}", synchronous=setting)
    try:
        for session_of in (database.write, database.read):
            async with session_of() as session:
                assert (await session.execute(text("PRAGMA synchronous"))).scalar() == pragma
    finally:
        await database.dispose()


def test_an_unknown_synchronous_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FULL or NORMAL"):
        Database(f"sqlite+aiosqlite:///{tmp_path / 'glimpse.db'}", synchronous="OFF")


async def test_a_file_made_some_other_way_is_switched_to_wal_on_first_open(tmp_path: Path) -> None:
    path = tmp_path / "glimpse.db"
    with sqlite3.connect(path) as connection:  # the default rollback-journal mode
        connection.execute("CREATE TABLE t (x INTEGER)")
    database = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with database.write() as session:
            await session.execute(text("INSERT INTO t (x) VALUES (1)"))
    finally:
        await database.dispose()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("SELECT x FROM t").fetchall() == [(1,)]
