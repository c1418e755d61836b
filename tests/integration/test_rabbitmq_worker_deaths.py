"""RabbitMQ and workers that die mid-job: the broker hands a dead worker's delivery back at the
head of its queue, yet the job it was running waits its turn behind the others, as in the jobs
table, instead of being taken at once by the next worker (and, should that one die too, the
next: one death of each worker then costing the same job one attempt after another).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Collection

import pytest

from glimpse.backends.queue.base import ClaimedJob
from glimpse.backends.queue.outbox import enqueue
from glimpse.backends.queue.rabbitmq import RabbitJobQueue
from glimpse.backends.queue.sql import SqlJobQueue
from glimpse.config import Settings
from glimpse.container import Container, build_container
from glimpse.jobs import Payload, registry
from tests.broker import Broker, broker  # noqa: F401  (the session's vhost)
from tests.databases import migrate

pytestmark = pytest.mark.rabbitmq

LEASE = 0.3  # the dying workers' lease, short so that their jobs come back within the test


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[Container]:
    migrate(settings.resolved_database_url)
    made = build_container(settings, node_id=1)  # only to enqueue and read rows
    yield made
    await made.close()


async def claim_next(queue: RabbitJobQueue, names: Collection[str]) -> ClaimedJob:
    deadline = time.monotonic() + 60
    while (job := await queue.claim(names)) is None:
        assert time.monotonic() < deadline, "no job was delivered"
        await queue.wait_for_work(names, 0.5)
    return job


async def test_a_job_whose_worker_died_waits_behind_the_others_and_keeps_its_attempts(
    container: Container,
    broker: Broker,  # noqa: F811
) -> None:
    url = broker.url(prefix=f"d{uuid.uuid4().hex[:8]}.")
    name = f"rabbit_{uuid.uuid4().hex[:12]}"

    async def handler(container: Container, payload: Payload) -> None:
        return None

    registry.job(name)(handler)
    # Two attempts each: two worker deaths on one job, and its third claim would bury it.
    jobs = []
    for _ in range(2):
        async with container.db.write() as session:
            jobs.append(enqueue(session, container.ids, name, {}, max_attempts=2))

    # Two workers in turn take a job and die with it: their deliveries go back to the broker
    # unacknowledged, and their rows stay `running` until the lease runs out.
    taken = []
    for n in range(2):
        doomed = RabbitJobQueue(
            url, container.db, worker_name=f"doomed-{n}", lease_seconds=LEASE, poll_seconds=0.01
        )
        taken.append((await claim_next(doomed, {name})).id)
        await doomed.close()
        await asyncio.sleep(LEASE * 2)
    assert sorted(taken) == sorted(jobs), "the job whose worker died was taken again at once"

    survivor = RabbitJobQueue(
        url, container.db, worker_name="survivor", lease_seconds=60, poll_seconds=0.01
    )
    try:
        for _ in jobs:
            job = await claim_next(survivor, {name})
            assert not job.exhausted, job
            await survivor.complete(job)
    finally:
        await survivor.close()


async def test_a_delivery_nobody_settles_is_dead_lettered_after_the_delivery_limit(
    container: Container,
    broker: Broker,  # noqa: F811
) -> None:
    # A message that keeps coming back (its workers die with it, or never take it) goes to the
    # dead-letter queue once delivered `delivery_limit` times: the broker counts, which it does
    # for quorum queues only.
    import aio_pika  # an optional extra: tests.broker says when it is missing

    prefix = f"l{uuid.uuid4().hex[:8]}."
    url = broker.url(prefix=prefix, delivery_limit="1")
    name = f"rabbit_{uuid.uuid4().hex[:12]}"

    async def handler(container: Container, payload: Payload) -> None:
        return None

    registry.job(name)(handler)
    async with container.db.write() as session:
        enqueue(session, container.ids, name, {}, max_attempts=3)
    # Never claims: each delivery is given back unclaimed (as by a worker whose lanes are all
    # busy), and comes again.
    busy = RabbitJobQueue(
        url, container.db, worker_name="busy", lease_seconds=60, poll_seconds=0.01
    )
    connection = await aio_pika.connect(url.split("?")[0])
    try:
        await busy.wait_for_work({name}, 60)
        channel = await connection.channel()
        deadline = time.monotonic() + 120  # (a guard against a hang; it times nothing)
        while True:
            dead = await channel.declare_queue(f"{prefix}dead", passive=True)
            if dead.declaration_result.message_count:
                break
            assert time.monotonic() < deadline, "the message was never dead-lettered"
            await asyncio.sleep(0.2)
    finally:
        await connection.close()
        await busy.close()


async def test_retried_and_dropped_deliveries_are_settled_so_the_next_ones_come(
    container: Container,
    broker: Broker,  # noqa: F811
) -> None:
    # A delivery held unsettled takes one of the consumer's `prefetch` slots until the channel
    # closes: a worker whose retried jobs, or news of jobs done elsewhere, were not settled
    # would soon get nothing more. One slot here, so that one such delivery stops it.
    url = broker.url(prefix=f"p{uuid.uuid4().hex[:8]}.", prefetch="1")
    name = f"rabbit_{uuid.uuid4().hex[:12]}"

    async def handler(container: Container, payload: Payload) -> None:
        return None

    registry.job(name)(handler)
    table = SqlJobQueue(container.db, worker_name="elsewhere", lease_seconds=60, poll_seconds=1)
    queue = RabbitJobQueue(url, container.db, worker_name="w", lease_seconds=60, poll_seconds=0.01)
    try:
        async with container.db.write() as session:
            first = enqueue(session, container.ids, name, {}, max_attempts=3)
        job = await claim_next(queue, {name})
        await queue.retry(job, "flaky", 0.0)  # the delivery is acked; the relay publishes again
        job = await claim_next(queue, {name})
        assert job.id == first
        await queue.complete(job)

        # News of a job that another worker ran meanwhile: dropped, and acked.
        async with container.db.write() as session:
            second = enqueue(session, container.ids, name, {}, max_attempts=3)
        await queue.wait_for_work({name}, 60)
        done_elsewhere = await table.claim_id(second)
        assert done_elsewhere is not None
        await table.complete(done_elsewhere)
        assert await queue.claim({name}) is None

        async with container.db.write() as session:
            third = enqueue(session, container.ids, name, {}, max_attempts=3)
        job = await claim_next(queue, {name})
        assert job.id == third
        await queue.complete(job)
    finally:
        await queue.close()
