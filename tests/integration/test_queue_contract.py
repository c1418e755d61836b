"""One contract for every queue backend: the embedded SQL queue and RabbitMQ (a real broker, in
a vhost of this session's own) pass the same tests.

Each test stands for one or two worker processes (containers) over one SQLite file; handlers are
registered under names unique to the test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import pytest
from sqlalchemy import text

from glimpse.backends.queue.base import ClaimedJob, JobConsumer
from glimpse.backends.queue.outbox import enqueue
from glimpse.backends.queue.sql import SqlJobQueue
from glimpse.config import Settings
from glimpse.container import Container, build_container
from glimpse.jobs import Payload, registry
from tests.broker import Broker, broker  # noqa: F401  (the session's vhost)
from tests.databases import migrate

MakeContainer = Callable[..., Container]


@pytest.fixture(params=["sql", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def queue_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sql":
        return "sql://"
    session_broker: Broker = request.getfixturevalue("broker")
    return session_broker.url(prefix=f"c{uuid.uuid4().hex[:8]}.")


@pytest.fixture
async def make_container(settings: Settings, queue_url: str) -> AsyncIterator[MakeContainer]:
    migrate(settings.resolved_database_url)
    made: list[Container] = []

    def make(node_id: int = 1, **overrides: Any) -> Container:
        container = build_container(
            settings.model_copy(update={"queue_url": queue_url, **overrides}), node_id=node_id
        )
        made.append(container)
        return container

    yield make
    for container in made:
        await container.close()


def new_name() -> str:
    name = f"contract_{uuid.uuid4().hex[:12]}"

    async def handler(container: Container, payload: Payload) -> None:
        return None

    registry.job(name)(handler)
    return name


async def add_job(container: Container, name: str, payload: Payload | None = None) -> int:
    async with container.db.write() as session:
        return enqueue(session, container.ids, name, payload or {}, max_attempts=3)


async def claim_within(
    queue: JobConsumer,
    names: Collection[str],
    seconds: float,
    *,
    lease_seconds: float | None = None,
) -> ClaimedJob | None:
    """The first job claimed within `seconds`, as a worker's lane would claim it."""
    deadline = time.monotonic() + seconds
    while True:
        job = await queue.claim(names, lease_seconds=lease_seconds)
        left = deadline - time.monotonic()
        if job is not None or left <= 0:
            return job
        await queue.wait_for_work(names, min(left, 0.2))


async def test_a_committed_job_is_claimed_with_its_payload_and_gone_once_complete(
    make_container: MakeContainer,
) -> None:
    container = make_container()
    name = new_name()
    job_id = await add_job(container, name, {"photo": 7})
    job = await claim_within(container.queue, {name}, 10)
    assert job is not None
    assert (job.id, job.name, job.payload["photo"], job.attempts) == (job_id, name, 7, 1)
    assert await container.queue.state_counts() == {"running": 1}
    await container.queue.complete(job)
    assert await container.queue.state_counts() == {}
    assert await claim_within(container.queue, {name}, 1.0) is None


async def test_a_claimed_job_is_not_claimed_by_another_worker_while_leased(
    make_container: MakeContainer,
) -> None:
    first, second = make_container(), make_container(node_id=2)
    name = new_name()
    await add_job(first, name)
    job = await claim_within(first.queue, {name}, 10)
    assert job is not None
    assert await claim_within(second.queue, {name}, 1.5) is None
    assert await first.queue.extend(job)
    await first.queue.complete(job)
    assert not await first.queue.extend(job)


async def test_a_retried_job_comes_back_after_its_backoff_and_not_before(
    make_container: MakeContainer,
) -> None:
    container = make_container()
    name = new_name()
    await add_job(container, name)
    job = await claim_within(container.queue, {name}, 10)
    assert job is not None
    await container.queue.retry(job, "boom", 2.0)
    assert await container.queue.state_counts() == {"scheduled": 1}
    started = time.monotonic()
    again = await claim_within(container.queue, {name}, 15)
    assert again is not None
    assert time.monotonic() - started >= 1.5
    assert (again.id, again.attempts, again.last_error) == (job.id, 2, "boom")
    await container.queue.complete(again)


async def test_a_retry_that_does_not_count_gives_the_attempt_back(
    make_container: MakeContainer,
) -> None:
    container = make_container()
    name = new_name()
    await add_job(container, name)
    job = await claim_within(container.queue, {name}, 10)
    assert job is not None
    await container.queue.retry(job, "storage down", 0.0, count_attempt=False)
    again = await claim_within(container.queue, {name}, 10)
    assert again is not None and again.attempts == 1
    await container.queue.complete(again)


async def test_a_buried_job_is_dead_and_never_claimed_again(
    make_container: MakeContainer,
) -> None:
    container = make_container()
    name = new_name()
    await add_job(container, name)
    job = await claim_within(container.queue, {name}, 10)
    assert job is not None
    await container.queue.bury(job, "processing_failed: no")
    assert await container.queue.state_counts() == {"dead": 1}
    assert await claim_within(container.queue, {name}, 1.5) is None
    assert await container.queue.pending_names() == set()


async def test_the_job_of_a_worker_that_stopped_answering_runs_again_after_its_lease(
    make_container: MakeContainer,
) -> None:
    lost, survivor = make_container(), make_container(node_id=2)
    name = new_name()
    await add_job(lost, name)
    job = await claim_within(lost.queue, {name}, 10, lease_seconds=1.0)
    assert job is not None
    # The first worker hangs (never completes, never renews); its lease runs out.
    again = await claim_within(survivor.queue, {name}, 15)
    assert again is not None and (again.id, again.attempts) == (job.id, 2)
    # The late first worker cannot settle what is no longer its own.
    await lost.queue.complete(job)
    assert await survivor.queue.state_counts() == {"running": 1}
    await survivor.queue.complete(again)
    assert await survivor.queue.state_counts() == {}


async def test_every_job_runs_exactly_once_across_two_workers_claiming_together(
    make_container: MakeContainer,
) -> None:
    workers = [make_container(), make_container(node_id=2)]
    name = new_name()
    ids = {await add_job(workers[0], name, {"n": n}) for n in range(20)}
    ran: list[int] = []

    async def work(container: Container) -> None:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 2.0:
            job = await container.queue.claim({name})
            if job is None:
                await container.queue.wait_for_work({name}, 0.2)
                continue
            ran.append(job.id)
            await container.queue.complete(job)
            idle_since = time.monotonic()

    await asyncio.gather(*(work(w) for w in workers))
    assert sorted(ran) == sorted(ids)


async def test_pending_names_and_state_counts_tell_due_from_later(
    make_container: MakeContainer,
) -> None:
    container = make_container()
    now_name, later_name = new_name(), new_name()
    await add_job(container, now_name)
    async with container.db.write() as session:
        enqueue(session, container.ids, later_name, {}, max_attempts=3, delay_seconds=60)
    assert await container.queue.pending_names() == {now_name, later_name}
    assert await container.queue.state_counts() == {"queued": 1, "scheduled": 1}
    await container.queue.check()


async def test_the_oldest_due_job_s_age_counts_waiting_due_jobs_only(
    make_container: MakeContainer,
) -> None:
    container = make_container()
    name = new_name()
    assert await container.queue.oldest_due_age() == 0.0
    job_id = await add_job(container, name)
    later = await add_job(container, name)
    async with container.db.write() as session:
        # One became due ten minutes ago, the other is due only in an hour.
        await session.execute(
            text("UPDATE jobs SET available_at = :at WHERE id = :id"),
            {"at": time.time() - 600, "id": job_id},
        )
        await session.execute(
            text("UPDATE jobs SET available_at = :at WHERE id = :id"),
            {"at": time.time() + 3600, "id": later},
        )
    assert 600 <= await container.queue.oldest_due_age() < 660
    job = await claim_within(container.queue, {name}, 10)
    assert job is not None and job.id == job_id
    # Running, it no longer waits; the other is not due yet.
    assert await container.queue.oldest_due_age() == 0.0
    await container.queue.bury(job, "no")
    async with container.db.write() as session:  # dead, long since its time: not waiting
        await session.execute(
            text("UPDATE jobs SET available_at = :at WHERE id = :id"),
            {"at": time.time() - 600, "id": job_id},
        )
    assert await container.queue.oldest_due_age() == 0.0


async def test_news_of_a_job_claims_it_only_while_it_is_due(make_container: MakeContainer) -> None:
    # What a broker's delivery claims (SqlJobQueue.claim_id, the one claim of every backend): a
    # duplicate or late message must not take a job that runs under another worker's lease,
    # waits for a later retry, or is dead.
    container = make_container()
    job_id = await add_job(container, new_name())
    table = SqlJobQueue(container.db, worker_name="other", lease_seconds=60, poll_seconds=0.01)
    first = await table.claim_id(job_id)
    assert first is not None and first.attempts == 1
    assert await table.claim_id(job_id) is None  # running, under its lease
    await table.retry(first, "boom", 60.0)
    assert await table.claim_id(job_id) is None  # due in a minute
    async with container.db.write() as session:
        await session.execute(
            text("UPDATE jobs SET available_at = :at WHERE id = :id"),
            {"at": time.time() - 1, "id": job_id},
        )
    again = await table.claim_id(job_id, lease_seconds=5.0)
    assert again is not None and (again.attempts, again.last_error) == (2, "boom")
    assert again.lease_seconds == 5.0
    await table.bury(again, "no")
    async with container.db.write() as session:  # (a dead row keeps its lease's time)
        await session.execute(
            text("UPDATE jobs SET available_at = :at WHERE id = :id"),
            {"at": time.time() - 1, "id": job_id},
        )
    assert await table.claim_id(job_id) is None  # dead
