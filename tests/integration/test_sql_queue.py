"""The embedded queue (jobs table in a real SQLite file): outbox semantics, leases, retries,
dead letters, start-up checks and the worker loop.

Handlers are registered on the application's (global) registry under names unique to each test,
so that no test sees another's jobs as its own.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from glimpse.backends.queue.base import ClaimedJob
from glimpse.backends.queue.models import Job, JobState
from glimpse.backends.queue.outbox import enqueue
from glimpse.backends.queue.sql import SqlJobQueue
from glimpse.config import Settings
from glimpse.container import Container, build_container
from glimpse.holders import local_machine
from glimpse.jobs import (
    DeadHandler,
    Handler,
    Payload,
    PermanentJobError,
    UnknownJob,
    registry,
)
from glimpse.ops.request_ids import REQUEST_ID
from glimpse.worker import StartupError, drain, run_job, run_worker, schedule_periodic_jobs
from tests.databases import migrate

MakeContainer = Callable[..., Container]


@pytest.fixture
async def make_container(settings: Settings) -> AsyncIterator[MakeContainer]:
    """Builds containers over one migrated SQLite file; each stands for one process."""
    migrate(settings.resolved_database_url)
    made: list[Container] = []

    def make(node_id: int = 1, **overrides: Any) -> Container:
        container = build_container(settings.model_copy(update=overrides), node_id=node_id)
        made.append(container)
        return container

    yield make
    for container in made:
        await container.close()


def register(handler: Handler, on_dead: DeadHandler | None = None) -> str:
    name = f"test_{uuid.uuid4().hex[:16]}"
    registry.job(name, on_dead=on_dead)(handler)
    return name


async def add_job(
    container: Container, name: str, payload: Payload | None = None, *, max_attempts: int = 5
) -> int:
    async with container.db.write() as session:
        return enqueue(session, container.ids, name, payload or {}, max_attempts=max_attempts)


async def job_rows(container: Container) -> list[Job]:
    """The jobs table, less the runs of periodic jobs that every worker keeps scheduled."""
    periodic = [spec.name for spec in registry.periodic()]
    async with container.db.read() as session:
        query = select(Job).where(Job.name.not_in(periodic)).order_by(Job.id)
        return list((await session.execute(query)).scalars())


class DeadLetters:
    """An on_dead handler that remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[Payload, PermanentJobError]] = []

    async def __call__(
        self, container: Container, payload: Payload, error: PermanentJobError
    ) -> None:
        self.calls.append((payload, error))


# --- outbox ---------------------------------------------------------------------------------


async def test_job_enqueued_in_a_rolled_back_transaction_never_exists(
    make_container: MakeContainer,
) -> None:
    ran: list[Payload] = []

    async def handler(container: Container, payload: Payload) -> None:
        ran.append(payload)

    name = register(handler)
    container = make_container()
    with pytest.raises(RuntimeError):
        async with container.db.write() as session:
            enqueue(session, container.ids, name, {"n": 1}, max_attempts=3)
            raise RuntimeError("the change that asked for the job failed")

    assert await job_rows(container) == []
    assert await container.queue.claim(registry.names()) is None
    assert await drain(container) == 0
    assert ran == []


async def test_committed_jobs_run_exactly_once_with_two_processes_claiming_concurrently(
    make_container: MakeContainer,
) -> None:
    ran: list[int] = []

    async def handler(container: Container, payload: Payload) -> None:
        await asyncio.sleep(0)  # let the other claimers interleave
        ran.append(payload["n"])

    name = register(handler)
    first, second = make_container(node_id=1), make_container(node_id=2)
    async with first.db.write() as session:
        for n in range(50):
            enqueue(session, first.ids, name, {"n": n}, max_attempts=3)

    async def claimer(container: Container) -> int:
        count = 0
        while (job := await container.queue.claim(registry.names())) is not None:
            await run_job(container, job)
            count += 1
        return count

    counts = await asyncio.wait_for(
        asyncio.gather(claimer(first), claimer(second), claimer(first), claimer(second)),
        timeout=20,
    )

    assert sorted(ran) == list(range(50))
    assert sum(counts) == 50
    assert await job_rows(first) == []


# --- leases ---------------------------------------------------------------------------------


async def test_claimed_job_is_not_claimable_again_until_its_lease_runs_out(
    make_container: MakeContainer,
) -> None:
    async def handler(container: Container, payload: Payload) -> None:
        return None

    name = register(handler)
    first = make_container(node_id=1, job_lease_seconds=0.3)
    second = make_container(node_id=2, job_lease_seconds=0.3)
    job_id = await add_job(first, name)

    claimed = await first.queue.claim(registry.names())
    assert claimed is not None and claimed.id == job_id and claimed.attempts == 1
    assert await second.queue.claim(registry.names()) is None
    assert await first.queue.claim(registry.names()) is None

    await asyncio.sleep(0.45)
    reclaimed = await second.queue.claim(registry.names())
    assert reclaimed is not None
    assert (reclaimed.id, reclaimed.attempts) == (job_id, 2)


async def test_late_first_worker_cannot_undo_the_claim_of_the_worker_that_took_over(
    make_container: MakeContainer,
) -> None:
    async def handler(container: Container, payload: Payload) -> None:
        return None

    name = register(handler)
    first = make_container(node_id=1, job_lease_seconds=0.2)
    second = make_container(node_id=2, job_lease_seconds=60)
    job_id = await add_job(first, name)
    stale = await first.queue.claim(registry.names())
    assert stale is not None
    await asyncio.sleep(0.3)
    current = await second.queue.claim(registry.names())
    assert current is not None and current.id == job_id
    [held] = await job_rows(second)

    # The first worker wakes up late and tries to settle the job it no longer holds.
    assert not await first.queue.extend(stale)
    await first.queue.complete(stale)
    await first.queue.retry(stale, "late retry", 0)
    await first.queue.bury(stale, "late bury")

    [row] = await job_rows(second)
    assert (row.state, row.attempts, row.locked_by, row.last_error) == (
        JobState.RUNNING,
        2,
        held.locked_by,
        None,
    )
    assert row.available_at == pytest.approx(held.available_at)
    assert await first.queue.claim(registry.names()) is None  # still leased to the second worker

    assert await second.queue.extend(current)
    await second.queue.complete(current)
    assert await job_rows(second) == []


async def test_job_of_a_worker_that_died_is_run_by_another_after_the_lease(
    make_container: MakeContainer,
) -> None:
    ran: list[Payload] = []

    async def handler(container: Container, payload: Payload) -> None:
        ran.append(payload)

    name = register(handler)
    crashed = make_container(node_id=1, job_lease_seconds=0.2)
    survivor = make_container(node_id=2)
    await add_job(crashed, name, {"photo": 7})
    assert await crashed.queue.claim(registry.names()) is not None  # ...and the process dies here

    assert await drain(survivor) == 0  # still leased
    await asyncio.sleep(0.3)
    assert await drain(survivor) == 1

    assert ran == [{"photo": 7}]
    assert await job_rows(survivor) == []


def _holder_of_a_dead_local_process() -> str:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return f"{local_machine()}:{finished.pid}:0a1b2c3d"


async def test_a_restarted_worker_runs_a_dead_local_worker_s_job_at_once(
    make_container: MakeContainer,
) -> None:
    # A worker killed mid-transcode holds a lease of minutes; one on the same machine can see
    # that its process is gone and give the job back without waiting for the lease.
    ran: list[Payload] = []

    async def handler(container: Container, payload: Payload) -> None:
        ran.append(payload)

    name = register(handler)
    survivor = make_container(node_id=2)
    dead = SqlJobQueue(
        survivor.db,
        worker_name=_holder_of_a_dead_local_process(),
        lease_seconds=600,
        poll_seconds=0.05,
    )
    alive = make_container(node_id=3)  # a live worker of this process: its job stays leased
    await add_job(survivor, name, {"photo": 1})
    assert await dead.claim(registry.names()) is not None  # ...and the process was killed
    await add_job(survivor, name, {"photo": 2})
    assert await alive.queue.claim(registry.names()) is not None

    assert await drain(survivor) == 0  # both leased
    assert await survivor.queue.release_jobs_of_dead_workers() == 1
    assert await survivor.queue.release_jobs_of_dead_workers() == 0
    # Given back at once, as a death rather than an attempt (the claim stays counted, so that
    # the claim's number still names the run that died).
    released = next(j for j in await job_rows(survivor) if j.locked_by is None)
    assert (released.state, released.attempts, released.deaths) == (JobState.QUEUED, 1, 1)
    assert released.available_at <= time.time()
    assert "died" in (released.last_error or "")
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(survivor, stop))
    try:
        async with asyncio.timeout(30):  # (a bound on a hang)
            while not ran:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await worker
    assert ran == [{"photo": 1}]
    [left] = await job_rows(survivor)  # the live worker's, still its own
    assert left.locked_by == alive.holder and left.state == JobState.RUNNING


async def test_a_worker_at_start_gives_back_the_jobs_of_dead_local_workers(
    make_container: MakeContainer,
) -> None:
    ran: list[int] = []

    async def handler(container: Container, payload: Payload) -> None:
        ran.append(payload["attempt_seen"])

    name = register(handler)
    worker_container = make_container(node_id=2)
    dead = SqlJobQueue(
        worker_container.db,
        worker_name=_holder_of_a_dead_local_process(),
        lease_seconds=600,
        poll_seconds=0.05,
    )
    await add_job(worker_container, name, {"attempt_seen": 1})
    assert await dead.claim(registry.names()) is not None
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(worker_container, stop))
    try:
        async with asyncio.timeout(30):
            while not ran:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await worker
    assert ran == [1] and await job_rows(worker_container) == []


async def _kill_under(container: Container, times: int) -> None:
    """Claim the (only) job `times` times by workers that then die, each given back by
    `container`, as a worker killed mid-job again and again on this machine."""
    for _ in range(times):
        dead = SqlJobQueue(
            container.db,
            worker_name=_holder_of_a_dead_local_process(),
            lease_seconds=600,
            poll_seconds=0.05,
        )
        async with asyncio.timeout(30):  # (a bound on a hang: the backoff is short here)
            while await dead.claim(registry.names()) is None:
                await asyncio.sleep(0.01)
        assert await container.queue.release_jobs_of_dead_workers() == 1


async def test_a_job_whose_workers_keep_dying_is_not_buried_for_their_deaths(
    make_container: MakeContainer,
) -> None:
    # Killed mid-job more times than it has attempts (deploys, an operator, the OOM killer
    # taking the biggest process): the photo is not the fault, and must still be processed.
    ran: list[Payload] = []

    async def handler(container: Container, payload: Payload) -> None:
        ran.append(payload)

    name = register(handler)
    survivor = make_container(node_id=2, job_retry_base_seconds=0.01)
    await add_job(survivor, name, {"photo": 1}, max_attempts=2)
    await _kill_under(survivor, 4)
    [row] = await job_rows(survivor)
    assert (row.state, row.attempts, row.deaths) == (JobState.QUEUED, 4, 4)
    async with asyncio.timeout(30):
        while not ran:
            await drain(survivor)
            await asyncio.sleep(0.01)
    assert ran == [{"photo": 1}] and await job_rows(survivor) == []


async def test_a_job_whose_workers_keep_dying_is_buried_after_too_many_deaths(
    make_container: MakeContainer,
) -> None:
    # ...but a job that is itself what kills them must not take every worker down for ever.
    ran: list[Payload] = []
    told: list[str] = []

    async def handler(container: Container, payload: Payload) -> None:
        ran.append(payload)

    async def on_dead(container: Container, payload: Payload, error: PermanentJobError) -> None:
        told.append(error.code)

    name = register(handler, on_dead)
    survivor = make_container(node_id=2, job_retry_base_seconds=0.01, job_max_worker_deaths=3)
    await add_job(survivor, name, {"photo": 1})
    await _kill_under(survivor, 3)
    async with asyncio.timeout(30):
        while (await job_rows(survivor))[0].state != JobState.DEAD:
            await drain(survivor)
            await asyncio.sleep(0.01)
    [row] = await job_rows(survivor)
    assert ran == [] and told == ["processing_failed"]
    assert "worker died 3 times" in (row.last_error or "")


async def test_a_job_running_longer_than_its_lease_keeps_it(make_container: MakeContainer) -> None:
    # A slow photo must not be claimed again meanwhile, or buried as "kept failing" while it is
    # about to succeed: the worker renews the lease while the handler works.
    runs: list[int] = []

    async def slow(container: Container, payload: Payload) -> None:
        runs.append(1)
        await asyncio.sleep(2.5)  # more than twice the lease

    name = register(slow)
    working = make_container(node_id=1, job_lease_seconds=1.0)
    other = make_container(node_id=2, job_lease_seconds=1.0)
    await add_job(working, name)
    job = await working.queue.claim(registry.names())
    assert job is not None

    running = asyncio.create_task(run_job(working, job))
    while not running.done():
        assert await other.queue.claim(registry.names()) is None
        await asyncio.sleep(0.1)
    await running

    assert runs == [1]
    assert await job_rows(working) == []


async def test_a_stale_claim_of_the_same_worker_cannot_settle_its_new_claim(
    make_container: MakeContainer,
) -> None:
    # The same worker took the job again after its own lease lapsed (a run that hung): the
    # first run, ending late, must not complete the second's job under it.
    name = register(lambda container, payload: asyncio.sleep(0))
    container = make_container(node_id=1)
    await add_job(container, name)
    first = await container.queue.claim(registry.names(), lease_seconds=0.01)
    await asyncio.sleep(0.05)
    second = await container.queue.claim(registry.names(), lease_seconds=600)
    assert first is not None and second is not None and second.attempts == first.attempts + 1
    await container.queue.complete(first)
    assert len(await job_rows(container)) == 1
    assert not await container.queue.extend(first)
    assert await container.queue.extend(second)


async def test_a_lease_is_renewed_for_as_long_as_the_job_was_claimed_under(
    make_container: MakeContainer,
) -> None:
    # A video's transcode is claimed under its own, longer lease: renewing it under the queue's
    # short one would let another worker take the job mid-transcode.
    name = register(lambda container, payload: asyncio.sleep(0))
    container = make_container(node_id=1, job_lease_seconds=5.0)
    await add_job(container, name)
    job = await container.queue.claim(registry.names(), lease_seconds=600.0)
    assert job is not None
    before = time.time()
    assert await container.queue.extend(job)
    [row] = await job_rows(container)
    assert row.available_at >= before + 599


async def test_a_job_hung_past_its_longest_run_lets_its_lease_lapse(
    make_container: MakeContainer,
) -> None:
    # A handler stuck for good (a decoder looping in its thread) must not keep the job forever:
    # past job_max_run_seconds the lease lapses and another worker takes the job up again.
    release = asyncio.Event()

    async def hung(container: Container, payload: Payload) -> None:
        await release.wait()

    name = register(hung)
    stuck = make_container(node_id=1, job_lease_seconds=0.3, job_max_run_seconds=0.6)
    other = make_container(node_id=2)
    await add_job(stuck, name)
    job = await stuck.queue.claim(registry.names())
    assert job is not None
    running = asyncio.create_task(run_job(stuck, job))
    try:
        deadline = time.monotonic() + 10
        while (again := await other.queue.claim(registry.names())) is None:
            assert time.monotonic() < deadline, "the lease was kept forever"
            await asyncio.sleep(0.1)
        assert (again.id, again.attempts) == (job.id, 2)
    finally:
        release.set()
        await running


async def test_a_lease_that_cannot_be_renewed_does_not_stop_the_job(
    make_container: MakeContainer,
) -> None:
    # Renewals that fail (the job was taken over, or the database hiccuped) are logged; the run
    # goes on, which at-least-once delivery already allows for.
    async def slow(container: Container, payload: Payload) -> None:
        await asyncio.sleep(0.5)

    name = register(slow)
    container = make_container(job_lease_seconds=0.15)
    await add_job(container, name)
    job = await container.queue.claim(registry.names())
    assert job is not None
    renewals: list[bool] = []

    async def failing_extend(claimed: ClaimedJob) -> bool:
        renewals.append(True)
        raise ConnectionError("the database went away for a moment")

    container.queue.extend = failing_extend  # type: ignore[method-assign]
    await run_job(container, job)

    assert len(renewals) >= 2
    assert await job_rows(container) == []


# --- retries --------------------------------------------------------------------------------


async def test_failing_handler_is_retried_until_it_succeeds(
    make_container: MakeContainer,
) -> None:
    attempts: list[int] = []

    async def flaky(container: Container, payload: Payload) -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            raise ConnectionError("the disk hiccuped")

    name = register(flaky)
    container = make_container()
    await add_job(container, name, max_attempts=5)

    assert await drain(container) == 3
    assert attempts == [1, 2, 3]
    assert await job_rows(container) == []


async def test_failed_job_waits_about_the_backoff_before_it_runs_again(
    make_container: MakeContainer,
) -> None:
    async def failing(container: Container, payload: Payload) -> None:
        raise ConnectionError("storage is down")

    name = register(failing)
    container = make_container(job_retry_base_seconds=10, job_retry_max_seconds=600)
    await add_job(container, name, max_attempts=5)

    job = await container.queue.claim(registry.names())
    assert job is not None
    before = time.time()
    await run_job(container, job)

    [row] = await job_rows(container)
    assert row.state == JobState.QUEUED
    assert row.attempts == 1
    assert row.locked_by is None
    assert "storage is down" in (row.last_error or "")
    # First retry: base * 2^0 = 10 s, jittered by a factor in [0.5, 1.5).
    assert before + 5 - 1 <= row.available_at <= time.time() + 15
    assert await container.queue.claim(registry.names()) is None


# --- dead letters ---------------------------------------------------------------------------


async def test_job_that_always_fails_ends_in_dead_letters_after_max_attempts(
    make_container: MakeContainer,
) -> None:
    runs: list[Payload] = []
    dead = DeadLetters()

    async def broken(container: Container, payload: Payload) -> None:
        runs.append(payload)
        raise ValueError("cannot make the thumbnail")

    name = register(broken, on_dead=dead)
    container = make_container()
    await add_job(container, name, {"media_id": 3}, max_attempts=3)

    assert await drain(container) == 3
    assert len(runs) == 3

    [row] = await job_rows(container)
    assert row.state == JobState.DEAD
    assert row.attempts == 3
    assert row.locked_by is None
    assert "cannot make the thumbnail" in (row.last_error or "")
    assert len(dead.calls) == 1
    payload, error = dead.calls[0]
    assert payload == {"media_id": 3}
    assert isinstance(error, PermanentJobError)
    assert error.code == "processing_failed"

    # Dead letters stay for operators and are never run again.
    assert await drain(container) == 0
    assert len(runs) == 3
    assert await container.queue.pending_names() == set()


async def test_permanent_error_goes_to_dead_letters_at_the_first_attempt(
    make_container: MakeContainer,
) -> None:
    runs: list[Payload] = []
    dead = DeadLetters()

    async def undecodable(container: Container, payload: Payload) -> None:
        runs.append(payload)
        raise PermanentJobError("undecodable_image", "This file is not an image.")

    name = register(undecodable, on_dead=dead)
    container = make_container()
    await add_job(container, name, max_attempts=5)

    assert await drain(container) == 1
    assert len(runs) == 1
    [row] = await job_rows(container)
    assert (row.state, row.attempts) == (JobState.DEAD, 1)
    assert (row.last_error or "").startswith("undecodable_image: This file is not an image.")
    assert [(e.code, e.message) for _, e in dead.calls] == [
        ("undecodable_image", "This file is not an image.")
    ]


async def test_job_is_buried_only_after_its_dead_letter_handler_succeeded(
    make_container: MakeContainer,
) -> None:
    dead = DeadLetters()
    failures = [RuntimeError("the database went away")]

    async def undecodable(container: Container, payload: Payload) -> None:
        raise PermanentJobError("undecodable_image", "This file is not an image.")

    async def flaky_on_dead(
        container: Container, payload: Payload, error: PermanentJobError
    ) -> None:
        if failures:
            raise failures.pop()
        await dead(container, payload, error)

    name = register(undecodable, on_dead=flaky_on_dead)
    container = make_container()
    await add_job(container, name, max_attempts=1)

    # The first on_dead fails: the job is not buried but comes back, and next time the
    # (exhausted) job runs on_dead again and only then goes to dead letters.
    assert await drain(container) == 2
    [row] = await job_rows(container)
    assert row.state == JobState.DEAD
    # ...and the user hears the real reason, not "processing kept failing".
    assert [(e.code, e.message) for _, e in dead.calls] == [
        ("undecodable_image", "This file is not an image.")
    ]


async def test_job_whose_workers_keep_dying_is_buried_without_running_again(
    make_container: MakeContainer,
) -> None:
    runs: list[Payload] = []
    dead = DeadLetters()

    async def handler(container: Container, payload: Payload) -> None:
        runs.append(payload)

    name = register(handler, on_dead=dead)
    # A zero lease makes a claimed-and-abandoned job claimable again at once.
    container = make_container(job_lease_seconds=0)
    await add_job(container, name, {"media_id": 9}, max_attempts=2)
    for _ in range(2):
        assert await container.queue.claim(registry.names()) is not None  # the worker dies mid-job

    assert await drain(container) == 1

    assert runs == []
    [row] = await job_rows(container)
    assert (row.state, row.attempts) == (JobState.DEAD, 3)
    assert [(p, e.code) for p, e in dead.calls] == [({"media_id": 9}, "processing_failed")]


# --- payloads -------------------------------------------------------------------------------


async def test_handler_receives_the_payload_as_json_would_carry_it(
    make_container: MakeContainer,
) -> None:
    received: list[Payload] = []

    async def handler(container: Container, payload: Payload) -> None:
        received.append(payload)

    name = register(handler)
    container = make_container()
    await add_job(
        container,
        name,
        {"keys": ("a", "b"), "nested": {1: None}, "ratio": 1.5, "caption": "café ☕", "big": 2**62},
    )

    assert await drain(container) == 1
    # Exactly what a broker would deliver: tuples become lists, keys become strings.
    assert received == [
        {
            "keys": ["a", "b"],
            "nested": {"1": None},
            "ratio": 1.5,
            "caption": "café ☕",
            "big": 2**62,
        }
    ]


@pytest.mark.parametrize(
    "payload",
    [
        {"when": datetime(2026, 1, 1, tzinfo=UTC)},
        {"data": b"\x00\x01"},
        {"ids": {1, 2}},
        {"obj": object()},
    ],
    ids=["datetime", "bytes", "set", "object"],
)
async def test_payload_that_is_not_json_fails_at_enqueue(
    make_container: MakeContainer, payload: Payload
) -> None:
    async def handler(container: Container, payload: Payload) -> None:
        return None

    name = register(handler)
    container = make_container()
    with pytest.raises(TypeError):
        async with container.db.write() as session:
            enqueue(session, container.ids, name, payload, max_attempts=3)
    assert await job_rows(container) == []


async def test_unknown_job_name_fails_at_enqueue(make_container: MakeContainer) -> None:
    container = make_container()
    with pytest.raises(UnknownJob):
        async with container.db.write() as session:
            enqueue(session, container.ids, "test_nobody_handles_this", {}, max_attempts=3)
    assert await job_rows(container) == []


# --- the worker loop ------------------------------------------------------------------------


async def _insert_raw_job(container: Container, name: str, state: str = JobState.QUEUED) -> None:
    # Bypasses enqueue(): a row left by other code (an older or newer release).
    async with container.db.write() as session:
        session.add(
            Job(
                id=container.ids.next_id(),
                name=name,
                payload="{}",
                state=state,
                attempts=0,
                max_attempts=3,
                available_at=time.time(),
            )
        )


async def test_worker_refuses_to_start_when_a_queued_job_has_no_handler(
    make_container: MakeContainer,
) -> None:
    container = make_container()
    await _insert_raw_job(container, "test_from_a_newer_release")

    with pytest.raises(StartupError, match="test_from_a_newer_release"):
        await asyncio.wait_for(run_worker(container, asyncio.Event()), timeout=5)

    [row] = await job_rows(container)
    assert (row.state, row.attempts) == (JobState.QUEUED, 0)  # left for the right release


async def test_dead_job_without_handler_does_not_stop_the_worker_starting(
    make_container: MakeContainer,
) -> None:
    container = make_container()
    await _insert_raw_job(container, "test_long_gone_handler", state=JobState.DEAD)
    stop = asyncio.Event()
    stop.set()

    await asyncio.wait_for(run_worker(container, stop), timeout=5)


async def test_worker_finishes_the_job_in_progress_then_stops_when_told(
    make_container: MakeContainer,
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[int] = []

    async def slow(container: Container, payload: Payload) -> None:
        started.set()
        await release.wait()
        finished.append(payload["n"])

    name = register(slow)
    container = make_container()
    first = await add_job(container, name, {"n": 1})
    await asyncio.sleep(0.002)  # the second job is due after the first
    second = await add_job(container, name, {"n": 2})
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(container, stop))

    await asyncio.wait_for(started.wait(), timeout=5)
    stop.set()
    release.set()
    await asyncio.wait_for(worker, timeout=5)

    assert finished == [1]
    rows = await job_rows(container)
    assert [r.id for r in rows] == [second]
    assert first not in {r.id for r in rows}
    assert rows[0].state == JobState.QUEUED and rows[0].attempts == 0


async def test_a_job_not_done_within_the_grace_is_given_back_at_once_when_stopping(
    make_container: MakeContainer,
) -> None:
    # A worker stopped mid-transcode (a deploy) must neither hold the restart for minutes nor
    # leave the job to a lease that runs out minutes later: it is given back, its attempt
    # not counted, and another worker runs it at once.
    started = asyncio.Event()
    runs: list[str] = []

    async def endless(container: Container, payload: Payload) -> None:
        runs.append(container.holder)
        started.set()
        await asyncio.sleep(3600)

    name = register(endless)
    stopping = make_container(node_id=1, shutdown_grace_seconds=0.2, job_lease_seconds=600)
    await add_job(stopping, name)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(stopping, stop))
    await asyncio.wait_for(started.wait(), timeout=10)
    stop.set()
    await asyncio.wait_for(worker, timeout=10)
    [row] = await job_rows(stopping)
    assert (row.state, row.attempts, row.locked_by) == (JobState.QUEUED, 0, None)
    assert "stopped" in (row.last_error or "")
    other = make_container(node_id=2, job_lease_seconds=600)
    job = await other.queue.claim(registry.names())
    assert job is not None and job.attempts == 1


async def test_a_job_done_within_the_grace_finishes_when_stopping(
    make_container: MakeContainer,
) -> None:
    started, finished = asyncio.Event(), []

    async def short(container: Container, payload: Payload) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(1)

    name = register(short)
    container = make_container(shutdown_grace_seconds=30)
    await add_job(container, name)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(container, stop))
    await asyncio.wait_for(started.wait(), timeout=10)
    stop.set()
    await asyncio.wait_for(worker, timeout=10)
    assert finished == [1] and await job_rows(container) == []


async def test_idle_worker_stops_promptly_when_told(make_container: MakeContainer) -> None:
    container = make_container()
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(container, stop, concurrency=2))
    await asyncio.sleep(0.1)
    assert not worker.done()

    stop.set()
    await asyncio.wait_for(worker, timeout=2)


async def test_wait_for_work_wakes_when_another_process_enqueues(
    make_container: MakeContainer,
) -> None:
    async def handler(container: Container, payload: Payload) -> None:
        return None

    name = register(handler)
    worker_side, api_side = make_container(node_id=1), make_container(node_id=2)
    waiting = asyncio.create_task(worker_side.queue.wait_for_work({name}, timeout=30))
    await asyncio.sleep(0.1)
    assert not waiting.done()  # nothing to do yet

    await add_job(api_side, name)
    await asyncio.wait_for(waiting, timeout=2)


async def test_idle_worker_runs_a_job_enqueued_by_another_process_promptly(
    make_container: MakeContainer,
) -> None:
    done = asyncio.Event()

    async def handler(container: Container, payload: Payload) -> None:
        done.set()

    name = register(handler)
    worker_side, api_side = make_container(node_id=1), make_container(node_id=2)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(worker_side, stop))
    try:
        await asyncio.sleep(0.1)  # the worker is idle now
        await add_job(api_side, name)
        await asyncio.wait_for(done.wait(), timeout=2)
    finally:
        stop.set()
        await asyncio.wait_for(worker, timeout=5)
    assert await job_rows(api_side) == []


async def test_job_no_handler_knows_waits_for_a_worker_that_does(
    make_container: MakeContainer,
) -> None:
    # Say a newer release enqueued it during a rolling upgrade: older workers leave it be.
    container = make_container()
    await _insert_raw_job(container, "from_a_newer_release")
    assert await container.queue.claim(registry.names()) is None
    [row] = await job_rows(container)
    assert (row.state, row.attempts) == (JobState.QUEUED, 0)
    job = await container.queue.claim({"from_a_newer_release"})
    assert job is not None and job.name == "from_a_newer_release"


async def test_workers_keep_exactly_one_run_of_each_periodic_job_waiting(
    make_container: MakeContainer,
) -> None:
    async def tidy(container: Container, payload: Payload) -> None:
        return None

    name = f"test_{uuid.uuid4().hex[:16]}"
    registry.job(name, every=600)(tidy)
    first, second = make_container(node_id=1), make_container(node_id=2)
    before = time.time()
    await asyncio.gather(schedule_periodic_jobs(first), schedule_periodic_jobs(second))
    await schedule_periodic_jobs(first)

    async with first.db.read() as session:
        rows = list((await session.execute(select(Job).where(Job.name == name))).scalars())
    assert len(rows) == 1
    assert rows[0].state == JobState.QUEUED
    assert before + 600 <= rows[0].available_at <= time.time() + 600


async def test_a_due_job_no_handler_knows_does_not_keep_a_worker_awake(
    make_container: MakeContainer,
) -> None:
    container = make_container()
    await _insert_raw_job(container, "from_a_newer_release")
    waiting = asyncio.create_task(container.queue.wait_for_work(registry.names(), timeout=0.5))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # nothing it could claim is due: it keeps waiting
    await asyncio.wait_for(waiting, timeout=2)


async def test_a_failing_look_for_work_is_logged_and_the_worker_carries_on(
    make_container: MakeContainer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = asyncio.Event()

    async def handler(container: Container, payload: Payload) -> None:
        done.set()

    name = register(handler)
    container = make_container()
    real_wait = container.queue.wait_for_work
    failures = [RuntimeError("database went away for a moment")]

    async def flaky_wait(names: Any, timeout: float) -> None:
        if failures:
            raise failures.pop()
        await real_wait(names, timeout)

    monkeypatch.setattr(container.queue, "wait_for_work", flaky_wait)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(container, stop))
    try:
        await asyncio.sleep(0.1)
        await add_job(container, name)
        await asyncio.wait_for(done.wait(), timeout=5)
    finally:
        stop.set()
        await asyncio.wait_for(worker, timeout=5)
    assert "waiting for work failed" in caplog.text


async def test_state_counts_tell_due_jobs_from_those_due_later(
    make_container: MakeContainer,
) -> None:
    async def handler(container: Container, payload: Payload) -> None:
        return None

    name = register(handler)
    container = make_container()
    async with container.db.write() as session:
        enqueue(session, container.ids, name, {}, max_attempts=3)
        enqueue(session, container.ids, name, {}, max_attempts=3, delay_seconds=600)
        enqueue(session, container.ids, name, {}, max_attempts=3, delay_seconds=600)
    assert await container.queue.claim({name}) is not None

    counts = await container.queue.state_counts()
    assert (counts.get("queued", 0), counts["scheduled"], counts["running"]) == (0, 2, 1)


async def test_a_job_runs_under_the_id_of_the_request_that_enqueued_it_without_seeing_it(
    make_container: MakeContainer,
) -> None:
    seen: list[tuple[Payload, str | None]] = []

    async def handler(container: Container, payload: Payload) -> None:
        seen.append((payload, REQUEST_ID.get()))

    name = register(handler)
    container = make_container()
    token = REQUEST_ID.set("req-abc")
    try:
        await add_job(container, name, {"photo": 7})
    finally:
        REQUEST_ID.reset(token)
    assert await drain(container) == 1
    assert seen == [({"photo": 7}, "req-abc")]
    assert REQUEST_ID.get() is None  # (and the worker's own context is left as it was)
