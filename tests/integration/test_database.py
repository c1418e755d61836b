"""The SQLite file that several processes share."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from glimpse.db.migrate import upgrade_to_head


def test_a_migrated_file_is_already_in_wal_mode(tmp_path: Path) -> None:
    # Switching modes takes an exclusive lock; processes opening the file together must not have to.
    path = tmp_path / "glimpse.db"
    upgrade_to_head(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
