"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from glimpse.config import Settings
from glimpse.db.database import Database
from tests.databases import migrate


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    """The test's database (the stack's: SQLite or PostgreSQL), migrated, with no app over it."""
    migrate(settings.resolved_database_url)
    database = Database(settings.resolved_database_url)
    yield database
    await database.dispose()
