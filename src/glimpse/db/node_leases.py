"""Leases on the 13-bit node field of ids (ids.py), so that no two live processes share one.

Two processes with the same node could make the same id in the same millisecond. Each process
that writes leases a node in the database it writes to, renews it while it runs, and gives it
back when it stops; a crashed process's lease simply runs out.
"""

from __future__ import annotations

import random
import time

from sqlalchemy import Float, String, delete, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column

from glimpse.db.base import Base
from glimpse.db.database import Database
from glimpse.ids import MAX_NODE


class NodeLease(Base):
    __tablename__ = "node_leases"

    node: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float)


class NoFreeNode(RuntimeError):
    pass


async def acquire_node(
    db: Database, holder: str, ttl_seconds: float, rng: random.Random | None = None
) -> int:
    """Lease a node no live process holds. Nodes are tried at random: with a few dozen
    processes alive, the first try almost always wins."""
    rng = rng or random.SystemRandom()
    for _ in range(256):
        node = rng.randint(0, MAX_NODE)
        now = time.time()
        async with db.write() as session:
            insert = sqlite_insert if db.is_sqlite else pg_insert
            statement = insert(NodeLease).values(
                node=node, holder=holder, expires_at=now + ttl_seconds
            )
            result = await session.execute(
                statement.on_conflict_do_update(
                    index_elements=[NodeLease.node],
                    set_={"holder": holder, "expires_at": now + ttl_seconds},
                    where=NodeLease.expires_at < now,
                )
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                return node
    raise NoFreeNode("every id node tried is leased by a live process")


async def renew_node(db: Database, node: int, holder: str, ttl_seconds: float) -> bool:
    """Extend our lease; False if it was lost (it ran out and another process took it)."""
    async with db.write() as session:
        result = await session.execute(
            update(NodeLease)
            .where(NodeLease.node == node, NodeLease.holder == holder)
            .values(expires_at=time.time() + ttl_seconds)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


async def release_node(db: Database, node: int, holder: str) -> None:
    async with db.write() as session:
        await session.execute(
            delete(NodeLease).where(NodeLease.node == node, NodeLease.holder == holder)
        )
