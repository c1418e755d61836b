"""/readyz is probed every few seconds: it must not write to the log each time."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import Glimpse


async def test_readyz_logs_no_migration_lines(
    glimpse: Glimpse, caplog: pytest.LogCaptureFixture
) -> None:
    await glimpse.client.get("/readyz")  # whatever a first call may set up
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        for _ in range(2):
            response = await glimpse.client.get("/readyz")
            assert response.status_code == 200, response.text
    alembic = [r for r in caplog.records if r.name.startswith("alembic")]
    assert alembic == [], [r.getMessage() for r in alembic]


async def test_migrations_still_log_what_they_do(
    glimpse: Glimpse, caplog: pytest.LogCaptureFixture
) -> None:
    from glimpse.db.migrate import upgrade_to_head

    with caplog.at_level(logging.INFO, logger="alembic"):
        upgrade_to_head(f"sqlite+aiosqlite:///{glimpse.container.settings.data_dir}/other.db")
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("alembic")]
    assert any(m.startswith("Running upgrade") for m in messages), messages
