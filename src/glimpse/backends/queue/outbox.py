"""Enqueueing: an outbox row written in the caller's transaction, so that a job exists exactly
when the change that asked for it was committed, never before and never without it."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.backends.queue.models import Job, JobState
from glimpse.db.locks import lock_keys
from glimpse.ids import IdGenerator
from glimpse.jobs import registry
from glimpse.ops.metrics import JOBS_ENQUEUED, never_failing
from glimpse.ops.request_ids import tag_payload


def enqueue(
    session: AsyncSession,
    ids: IdGenerator,
    name: str,
    payload: dict[str, Any],
    *,
    max_attempts: int,
    delay_seconds: float = 0.0,
    owner: int | None = None,
) -> int:
    """Add a job to the caller's transaction. `owner` (an account id) is whose work it is:
    claims take the due jobs of the accounts with the least work under way first."""
    registry.get(name)  # an unknown name is a bug: fail in the request, not later in a worker
    # Round-trip through JSON now, as a broker would, so a payload that only works in-process
    # fails here and not after deployment.
    # The request (or job) asking for it lends the job its id, for the job's log lines.
    body = json.dumps(tag_payload(payload), separators=(",", ":"), sort_keys=True)
    job_id = ids.next_id()
    with never_failing():
        JOBS_ENQUEUED.labels(name).inc()
    session.add(
        Job(
            id=job_id,
            name=name,
            payload=body,
            state=JobState.QUEUED,
            attempts=0,
            max_attempts=max_attempts,
            available_at=time.time() + delay_seconds,
            owner=owner,
        )
    )
    return job_id


async def ensure_pending(
    session: AsyncSession,
    ids: IdGenerator,
    name: str,
    *,
    max_attempts: int,
    delay_seconds: float,
) -> bool:
    """Enqueue `name` (with an empty payload) unless a run of it is already waiting; True if
    this call enqueued it. In a write transaction, so that workers starting together agree
    (on PostgreSQL a lock on the name keeps two of them from both finding none waiting)."""
    await lock_keys(session, [f"job:{name}"])
    waiting = await session.execute(
        select(Job.id).where(Job.name == name, Job.state != JobState.DEAD).limit(1)
    )
    if waiting.first() is not None:
        return False
    enqueue(session, ids, name, {}, max_attempts=max_attempts, delay_seconds=delay_seconds)
    return True
