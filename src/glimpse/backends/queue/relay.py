"""The relay: publishes the outbox's due jobs to the broker, and marks each as relayed.

The jobs table stays the record of every job's state; a message only says "job N may be due".
So a lost or duplicated message costs nothing but a delay or a wasted claim: the claim on the
row (its state and lease) decides who runs a job, never the delivery.

A row is relayed when it is due and
  - nobody has published it yet (`locked_by` NULL: new, retried, given back by a dead worker), or
  - it is running under a lease that ran out (its worker died or hung), or
  - it was published long ago, is still waiting, and its kind's broker queue holds nothing
    ready (the message was lost: dead-lettered after too many deliveries, a purged queue).
It is marked first (only if the row did not change since it was read, so that of the relays of
several workers one publishes it), then published with a publisher confirm; a failed publish
unmarks it, and a crash between the two leaves it to the third rule above.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.db.database import Database

RELAYED = "relayed@"


@dataclass(frozen=True)
class DueJob:
    id: int
    name: str
    state: str
    attempts: int
    available_at: float
    locked_by: str | None


def relayed_marker(now: float) -> str:
    return f"{RELAYED}{now:.3f}"


def relayed_at(locked_by: str | None) -> float | None:
    """When the relay published a waiting row, or None if it did not (or another holds it)."""
    if not locked_by or not locked_by.startswith(RELAYED):
        return None
    try:
        return float(locked_by[len(RELAYED) :])
    except ValueError:
        return None


def needs_publishing(job: DueJob, now: float, *, stale_after: float, queue_idle: bool) -> bool:
    """The pure rule of the module docstring, for one due row."""
    if job.state == "running":
        return True  # due while running: its lease ran out
    published = relayed_at(job.locked_by)
    if published is None:
        return True
    return queue_idle and now - published >= stale_after


class Relay:
    def __init__(
        self,
        db: Database,
        publish: Callable[[DueJob], Awaitable[None]],
        ready_count: Callable[[str], Awaitable[int]],
        *,
        stale_after: float = 30.0,
        batch: int = 500,
    ) -> None:
        self._db = db
        self._publish = publish
        self._ready_count = ready_count
        self._stale_after = stale_after
        self._batch = batch
        self._due_sql = text(
            "SELECT id, name, state, attempts, available_at, locked_by FROM jobs"
            " WHERE state != 'dead' AND available_at <= :now AND name IN :names"
            " AND (locked_by IS NULL OR state = 'running' OR locked_by LIKE 'relayed@%')"
            " ORDER BY available_at LIMIT :batch"
        ).bindparams(bindparam("names", expanding=True))

    async def relay_once(self, names: Collection[str]) -> int:
        """Publish what is due among jobs of these names; returns how many were published."""
        if not names:
            return 0
        now = time.time()
        async with self._db.read() as session:
            rows = (
                await session.execute(
                    self._due_sql, {"now": now, "names": sorted(names), "batch": self._batch}
                )
            ).all()
        due = [DueJob(*row) for row in rows]
        idle: dict[str, bool] = {}
        chosen = []
        for job in due:
            published = relayed_at(job.locked_by)
            if published is not None and job.state != "running":
                if now - published < self._stale_after:
                    continue
                if job.name not in idle:
                    idle[job.name] = await self._ready_count(job.name) == 0
            if needs_publishing(
                job, now, stale_after=self._stale_after, queue_idle=idle.get(job.name, False)
            ):
                chosen.append(job)
        if not chosen:
            return 0
        # Marked first, in one transaction, and only rows unchanged since we read them: with a
        # relay in every worker, each row is published by the one relay whose mark took.
        marker = relayed_marker(time.time())
        async with self._db.write() as session:
            won = [job for job in chosen if await self._mark(session, job, marker)]
        results = await asyncio.gather(*(self._publish(job) for job in won), return_exceptions=True)
        failed = [job for job, result in zip(won, results, strict=True) if result is not None]
        if failed:
            # Not published after all: unmarked, for the next pass to try again.
            async with self._db.write() as session:
                for job in failed:
                    await session.execute(
                        text(
                            "UPDATE jobs SET locked_by = NULL"
                            " WHERE id = :id AND locked_by = :marker AND state = 'queued'"
                        ),
                        {"id": job.id, "marker": marker},
                    )
            error = next(r for r in results if isinstance(r, BaseException))
            raise error
        return len(won)

    async def _mark(self, session: AsyncSession, job: DueJob, marker: str) -> bool:
        holder = "locked_by IS NULL" if job.locked_by is None else "locked_by = :seen"
        result = await session.execute(
            text(
                "UPDATE jobs SET state = 'queued', locked_by = :marker"
                " WHERE id = :id AND state = :state AND attempts = :attempts"
                f" AND available_at = :available_at AND {holder}"
            ),
            {
                "marker": marker,
                "id": job.id,
                "state": job.state,
                "attempts": job.attempts,
                "available_at": job.available_at,
                "seen": job.locked_by,
            },
        )
        return bool(getattr(result, "rowcount", 0))
