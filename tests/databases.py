"""Databases for tests: the embedded SQLite file, or a fresh PostgreSQL database per test.

A PostgreSQL database is copied from a template where the migrations ran once per session
(CREATE DATABASE ... TEMPLATE takes tens of milliseconds; migrating takes a second). Names carry
a random part, so test runs of several engineers on one server never meet.

GLIMPSE_TEST_DATABASE=postgresql runs every test that takes the `settings` fixture on PostgreSQL;
`@ON_EVERY_DATABASE` runs chosen tests on both. GLIMPSE_TEST_POSTGRES_URL names the server
(default: the machine's own, user postgres). With CI=true a server that cannot be reached fails
the test; otherwise the test is skipped, saying why."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from glimpse.db.migrate import upgrade_to_head
from glimpse.db.urls import async_database_url

ADMIN_URL = os.environ.get(
    "GLIMPSE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DATABASES = ("sqlite", "postgresql")
ON_EVERY_DATABASE = pytest.mark.parametrize("database", DATABASES, indirect=True)

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` to its end from sync code, even inside a running event loop (a thread
    with a loop of its own)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


_sqlite_template: list[str] = []
_template_lock = threading.Lock()


def migrate(url: str) -> None:
    """Bring the test's database to the head revision. A SQLite file not made yet is copied from
    a template the migrations ran on once per test process (running them took a seventh of a
    second, before every API test: two minutes of a CI run); anything else is migrated."""
    parsed = make_url(async_database_url(url))
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or not path or path == ":memory:":
        upgrade_to_head(url)
        return
    target = Path(path)
    if target.exists():
        upgrade_to_head(url)
        return
    with _template_lock:
        if not _sqlite_template:
            folder = tempfile.mkdtemp(prefix="glimpse-test-template-")
            atexit.register(shutil.rmtree, folder, True)
            template = Path(folder) / "glimpse.db"
            upgrade_to_head(f"sqlite+aiosqlite:///{template}")
            # (Alembic's connections are closed: the file holds every page, no WAL is left.)
            assert (
                not Path(f"{template}-wal").exists() or not Path(f"{template}-wal").stat().st_size
            )
            _sqlite_template.append(str(template))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_sqlite_template[0], target)


def with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def chosen_database(stack: str) -> str:
    default = "postgresql" if stack == "scale" else "sqlite"
    kind = os.environ.get("GLIMPSE_TEST_DATABASE", default).lower()
    if kind not in DATABASES:
        raise ValueError(f"GLIMPSE_TEST_DATABASE must be one of {DATABASES}, not {kind!r}")
    return kind


async def _execute(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(url, timeout=5)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def require_postgres(url: str = ADMIN_URL) -> None:
    """Skip (or with CI=true fail) unless the PostgreSQL server at `url` answers."""
    try:
        run_sync(_execute(url, "SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        reason = f"PostgreSQL at {url} is not reachable: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


class PostgresDatabases:
    """Fresh databases cloned from one migrated template (one per test session)."""

    def __init__(self, admin_url: str = ADMIN_URL) -> None:
        self.admin_url = admin_url
        self._template: str | None = None
        self._made: list[str] = []

    def template(self) -> str:
        if self._template is None:
            require_postgres(self.admin_url)
            name = f"glimpse_tpl_{uuid.uuid4().hex[:12]}"
            run_sync(_execute(self.admin_url, f'CREATE DATABASE "{name}"'))
            self._made.append(name)
            upgrade_to_head(with_database(self.admin_url, name))
            self._template = name
        return self._template

    def fresh(self) -> str:
        """The URL of a new migrated database (postgresql://, as an operator writes it)."""
        template = self.template()
        name = f"glimpse_t_{uuid.uuid4().hex[:16]}"
        run_sync(
            _execute(
                self.admin_url,
                f'CREATE DATABASE "{name}" TEMPLATE "{template}"',
                # A commit waits for no disk flush (a test never survives the server's crash):
                # on the scale stack the tests made a flush every few milliseconds.
                f'ALTER DATABASE "{name}" SET synchronous_commit = off',
            )
        )
        return with_database(self.admin_url, name)

    def drop(self, url: str) -> None:
        name = url.rpartition("/")[2]
        run_sync(_execute(self.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        for name in self._made:
            run_sync(_execute(self.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
