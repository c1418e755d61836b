"""`glimpse jobs list | retry | purge-dead`: what an operator does with the jobs table.

The table is the record of every job whatever the queue backend (on the embedded one it is the
queue itself): dead jobs stay in it, with the error that buried them, until an operator gives
them another run or purges them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import delete, select, update

from glimpse.backends.queue.models import Job, JobState
from glimpse.container import Container
from glimpse.jobs import UnknownJob, registry

STATES = (JobState.QUEUED, JobState.RUNNING, JobState.DEAD)


@dataclass(frozen=True)
class JobLine:
    id: int
    name: str
    state: str
    attempts: int  # those that count against max_attempts
    max_attempts: int
    # When it may run next (queued), when its lease runs out (running), or its last lease (dead).
    at: float
    error: str  # the first line of the last error, "" when none
    worker_deaths: int = 0  # runs cut short by their worker's death (not attempts)

    def as_text(self, now: float) -> str:
        when = self.at - now
        timing = f"in {when:.0f}s" if when >= 0 else f"{-when:.0f}s ago"
        error = f"  {self.error}" if self.error else ""
        deaths = f" +{self.worker_deaths} worker deaths" if self.worker_deaths else ""
        return (
            f"{self.id}  {self.name}  {self.state}  {self.attempts}/{self.max_attempts}{deaths}"
            f"  {timing}{error}"
        )

    def as_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


async def list_jobs(container: Container, state: str | None, limit: int) -> list[JobLine]:
    """Jobs in `state` (all when None), oldest due first."""
    query = select(Job).order_by(Job.available_at, Job.id).limit(limit)
    if state is not None:
        query = query.where(Job.state == state)
    async with container.db.read() as session:
        rows = (await session.execute(query)).scalars().all()
    return [
        JobLine(
            id=j.id,
            name=j.name,
            state=j.state,
            attempts=j.attempts - j.deaths,
            max_attempts=j.max_attempts,
            at=j.available_at,
            error=(j.last_error or "").strip().splitlines()[0][:200] if j.last_error else "",
            worker_deaths=j.deaths,
        )
        for j in rows
    ]


async def retry_dead_jobs(container: Container, ids: Collection[int] | None) -> list[int]:
    """Give dead jobs (those of `ids`, or all when None) a fresh set of attempts, due now, and
    undo what their burial did (a post marked failed is processing again), in one transaction
    each. Returns the ids given back; ids that are not dead jobs are left alone."""
    query = select(Job.id, Job.name, Job.payload).where(Job.state == JobState.DEAD)
    if ids is not None:
        query = query.where(Job.id.in_(list(ids)))
    async with container.db.read() as session:
        dead = (await session.execute(query.order_by(Job.id))).all()
    revived: list[int] = []
    for job_id, name, payload in dead:
        async with container.db.write() as session:
            result = await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.DEAD)
                .values(
                    state=JobState.QUEUED,
                    attempts=0,
                    deaths=0,
                    available_at=time.time(),
                    locked_by=None,
                )
            )
            if not getattr(result, "rowcount", 0):
                continue  # revived or purged by someone else meanwhile
            try:
                spec = registry.get(name)
            except UnknownJob:
                spec = None  # (a worker that knows it will run it; nothing to undo here)
            if spec is not None and spec.on_revive is not None:
                await spec.on_revive(session, json.loads(payload))
        revived.append(job_id)
    return revived


async def purge_dead_jobs(container: Container, older_than_seconds: float) -> int:
    """Delete dead jobs whose last run ended more than `older_than_seconds` ago."""
    cutoff = time.time() - older_than_seconds
    async with container.db.write() as session:
        result = await session.execute(
            delete(Job).where(Job.state == JobState.DEAD, Job.available_at <= cutoff)
        )
    return int(getattr(result, "rowcount", 0) or 0)
