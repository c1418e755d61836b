"""Every live process leases its own 13-bit id node from the database (db/node_leases.py)."""

from __future__ import annotations

import random
import sqlite3
import threading
import time

import pytest
from sqlalchemy import make_url, select, update

from glimpse.config import Settings
from glimpse.container import build_container
from glimpse.db.database import Database
from glimpse.db.node_leases import (
    NodeLease,
    NoFreeNode,
    acquire_node,
    release_node,
    renew_node,
)


async def leases(db: Database) -> dict[int, str]:
    async with db.read() as session:
        rows = await session.execute(select(NodeLease.node, NodeLease.holder))
        return {node: holder for node, holder in rows}


class EightNodes(random.Random):
    """Draws from nodes 0..7 only, so that leases keep colliding."""

    def randint(self, a: int, b: int) -> int:
        return super().randint(a, 7)


async def test_live_processes_never_share_a_node(db: Database) -> None:
    rng = EightNodes(7)
    nodes = [await acquire_node(db, f"process-{i}", 60, rng) for i in range(8)]
    assert sorted(nodes) == list(range(8))
    assert await leases(db) == {node: f"process-{i}" for i, node in enumerate(nodes)}
    with pytest.raises(NoFreeNode):
        await acquire_node(db, "one too many", 60, rng)


async def test_a_crashed_process_node_is_taken_over_once_its_lease_ran_out(db: Database) -> None:
    node = await acquire_node(db, "crashed", 60, random.Random(1))
    async with db.write() as session:
        await session.execute(update(NodeLease).values(expires_at=time.time() - 1))
    assert await acquire_node(db, "successor", 60, random.Random(1)) == node
    # The crashed process, should it wake up, learns that it lost the node.
    assert not await renew_node(db, node, "crashed", 60)
    assert await renew_node(db, node, "successor", 60)


async def test_release_gives_the_node_back_only_to_its_holder(db: Database) -> None:
    node = await acquire_node(db, "mine", 60)
    await release_node(db, node, "someone else")
    assert await leases(db) == {node: "mine"}
    await release_node(db, node, "mine")
    assert await leases(db) == {}


async def test_containers_lease_distinct_nodes_and_release_them_on_close(
    settings: Settings, db: Database
) -> None:
    first, second = build_container(settings), build_container(settings)
    await first.start()
    await second.start()
    try:
        assert first.ids.node != second.ids.node
        assert set(await leases(db)) == {first.ids.node, second.ids.node}
    finally:
        await first.close()
        await second.close()
    assert await leases(db) == {}


async def test_a_process_starting_while_another_holds_the_write_lock_waits_for_it(
    settings: Settings, db: Database
) -> None:
    """On a loaded machine a sibling can hold an embedded database's write lock past the busy
    timeout; a process starting (a rolling restart's) then waits instead of dying."""
    if not settings.is_sqlite:
        pytest.skip("the write lock of the embedded database")
    path = make_url(settings.resolved_database_url).database
    assert path
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    threading.Timer(1.0, holder.rollback).start()
    container = build_container(settings.model_copy(update={"database_busy_timeout_ms": 100}))
    try:
        await container.start()  # the lock outlasts ten busy timeouts
        assert set(await leases(db)) == {container.ids.node}
    finally:
        await container.close()
        holder.close()
