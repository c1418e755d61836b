"""A worker starting while PostgreSQL ends its session under the first statement.

Stop 32's CI lost its only worker this way: the fault suite's pg_terminate_backend landed on the
worker's start-up check (which queued jobs have no handler), the process died of it, and the
posts uploaded afterwards stayed "processing". The check now waits out an outage, as the node
lease at start does (tests/integration/test_node_leases.py)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from glimpse.config import Settings
from glimpse.container import build_container
from glimpse.db.urls import async_database_url
from glimpse.worker import check_registered_handlers

pytestmark = pytest.mark.parametrize("database", ["postgresql"], indirect=True)


async def test_a_worker_whose_start_up_check_loses_its_session_waits_and_starts(
    settings: Settings,
) -> None:
    url = async_database_url(settings.database_url).replace("postgresql+asyncpg", "postgresql")
    container = build_container(settings)
    await container.start()
    locker = await asyncpg.connect(url)
    try:
        # Hold the check's statement in flight (behind a lock) so that it is the one ended.
        await locker.execute("BEGIN; LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        checking = asyncio.create_task(check_registered_handlers(container))
        deadline = time.monotonic() + 30
        ended = 0
        while not ended:
            assert not checking.done(), checking
            assert time.monotonic() < deadline, "the start-up check never ran"
            # The session that waits behind the lock (its query text is not always the
            # statement's: asyncpg may show its protocol's ';' while it prepares).
            ended = await locker.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND wait_event_type = 'Lock'"
            )
            await asyncio.sleep(0.02)
        await locker.execute("ROLLBACK")
        await asyncio.wait_for(checking, 30)  # raised the lost connection before the fix
    finally:
        await locker.close()
        await container.close()
