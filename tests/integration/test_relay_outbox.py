"""The outbox relay (backends/queue/relay.py) over a real jobs table, publishing to a stand-in for
the broker: what a failed publish leaves for the next pass."""

from __future__ import annotations

import uuid

import pytest

from glimpse.backends.queue.outbox import enqueue
from glimpse.backends.queue.relay import DueJob, Relay
from glimpse.db.database import Database
from glimpse.ids import IdGenerator
from glimpse.jobs import Payload, registry


async def _nothing(container: object, payload: Payload) -> None:  # pragma: no cover
    pass


async def test_a_job_whose_publish_failed_is_published_at_the_next_pass(db: Database) -> None:
    # The row is marked relayed before its publish; a publish that fails (the broker went away
    # between the two) unmarks it, or the job would wait for the stale-message rule instead.
    name = f"relay_{uuid.uuid4().hex[:12]}"
    registry.job(name)(_nothing)
    async with db.write() as session:
        job_id = enqueue(session, IdGenerator(7), name, {}, max_attempts=3)
    published: list[int] = []
    broker_up = False

    async def publish(job: DueJob) -> None:
        if not broker_up:
            raise ConnectionError("the broker went away")
        published.append(job.id)

    async def ready_count(name: str) -> int:
        return 1  # (a queue with messages ready: no stale message is published again)

    relay = Relay(db, publish, ready_count, stale_after=3600.0)
    with pytest.raises(ConnectionError):
        await relay.relay_once({name})
    broker_up = True
    assert await relay.relay_once({name}) == 1
    assert published == [job_id]
    assert await relay.relay_once({name}) == 0  # published: not again
