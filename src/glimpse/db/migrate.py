"""Alembic driven from code: `glimpse migrate`, `glimpse serve` on first start, and /readyz."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, make_url

from glimpse.db.urls import async_database_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    url = async_database_url(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_to_head(url: str) -> None:
    """Apply every pending migration. Safe to call from inside a running event loop (env.py runs
    its own loop, so we give it a thread of its own there)."""
    url = async_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    config = alembic_config(url)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        command.upgrade(config, "head")
        return
    failure: list[BaseException] = []

    def run() -> None:
        try:
            command.upgrade(config, "head")
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


_head: list[str] = []


def head_revision() -> str | None:
    """The newest migration shipped with this code: read from the scripts once per process
    (they cannot change under it), not on every /readyz probe."""
    if not _head:
        head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
        if head is None:  # no scripts found: nothing worth remembering
            return None
        _head.append(head)
    return _head[0]


# A MigrationContext logs two INFO lines ("Context impl ...", "Will assume ... DDL") each time it
# is made: useful once per migration run, noise in every /readyz probe. They are dropped while
# current_revision() runs, and only then (a context variable: other threads and tasks log on).
_probing = contextvars.ContextVar("glimpse_probing_revision", default=False)


class _QuietWhileProbing(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _probing.get()


logging.getLogger("alembic.runtime.migration").addFilter(_QuietWhileProbing())


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, read through Alembic without a word in the log."""
    token = _probing.set(True)
    try:
        return MigrationContext.configure(connection).get_current_revision()
    finally:
        _probing.reset(token)
