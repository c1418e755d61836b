"""The worker: claims jobs and runs their registered handlers.

Image work is CPU-bound; handlers push it to a child process (media/decoding.py), waited on from
a thread so that this event loop stays free to notice a stop signal. A worker process runs
`concurrency` jobs at a time (default one: one process per core is the unit of scale), plus
`video_worker_concurrency` video transcodes in lanes of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
import traceback
from collections.abc import AsyncIterator

from glimpse.backends.queue.base import ClaimedJob, retry_delay
from glimpse.backends.queue.outbox import ensure_pending
from glimpse.container import START_WAIT_SECONDS, Container
from glimpse.db.failures import waiting_out_outages
from glimpse.errors import StorageUnavailable
from glimpse.jobs import DEFAULT_LANE, VIDEO_LANE, PermanentJobError, UnknownJob, registry
from glimpse.media import decoding
from glimpse.ops.metrics import JOB_SECONDS, JOBS_RUN, never_failing
from glimpse.ops.request_ids import REQUEST_ID, untag_payload

log = logging.getLogger("glimpse.worker")


# How often a worker checks that every periodic job has a run waiting, at most; a job due more
# often (the stories' reaper) is checked as often as it is due, or it would run that seldom.
PERIODIC_CHECK_SECONDS = 60.0


def periodic_check_seconds() -> float:
    return min(
        [
            PERIODIC_CHECK_SECONDS,
            *(spec.every or PERIODIC_CHECK_SECONDS for spec in registry.periodic()),
        ]
    )


class StartupError(RuntimeError):
    pass


async def check_registered_handlers(container: Container) -> None:
    """Refuse to start when queued jobs name handlers this code does not have. (A database that
    is busy or cut off meanwhile is waited out: a worker restarted during an outage must come
    up once it is over, not die of its first statement.)"""
    pending = await waiting_out_outages(
        container.queue.pending_names, "at start-up", START_WAIT_SECONDS
    )
    unknown = pending - registry.names()
    if unknown:
        raise StartupError(f"queued jobs have no registered handler: {', '.join(sorted(unknown))}")


async def run_job(container: Container, job: ClaimedJob) -> None:
    """Run one claimed job to its next state: done, retried later, or dead."""
    started = time.perf_counter()
    payload, request_id = untag_payload(job.payload)
    # Its lines, and the jobs it enqueues, under the id of the request that asked for it.
    token = REQUEST_ID.set(request_id)
    try:
        outcome = await _run_job(container, dataclasses.replace(job, payload=payload))
        elapsed = time.perf_counter() - started
        with never_failing():
            JOBS_RUN.labels(job.name, outcome).inc()
            JOB_SECONDS.labels(job.name).observe(elapsed)
        log.info(
            "job %s %s: %s",
            job.name,
            job.id,
            outcome,
            extra={
                "fields": {
                    "job_id": job.id,
                    "kind": job.name,
                    "attempt": job.counted_attempts,
                    "worker_deaths": job.deaths,
                    "outcome": outcome,
                    "duration_ms": round(elapsed * 1000, 2),
                }
            },
        )
    finally:
        REQUEST_ID.reset(token)


async def _run_job(container: Container, job: ClaimedJob) -> str:
    queue, settings = container.queue, container.settings
    try:
        spec = registry.get(job.name)
    except UnknownJob:
        await queue.bury(job, f"no handler registered for {job.name!r}")
        return "dead"
    if job.exhausted:
        # Claimed once too often: its lease ran out each time (a worker elsewhere died, or the
        # handler hung), or its on_dead failed last time, when the reason it left is the one
        # to pass on.
        return await _bury(
            container,
            job,
            _reason_left_by(job.last_error)
            or PermanentJobError("processing_failed", "processing kept failing"),
        )
    if job.deaths >= settings.job_max_worker_deaths:
        # Deaths do not count as attempts (queue/base.py), but this many, each while it ran,
        # say that the job is what kills its workers: it must not take them all down.
        return await _bury(
            container,
            job,
            PermanentJobError("processing_failed", "processing kept failing"),
            detail=f"its worker died {job.deaths} times while running it",
        )
    try:
        async with _lease_kept(container, job):
            await spec.handler(container, job.payload)
    except PermanentJobError as exc:
        return await _bury(container, job, exc)
    except StorageUnavailable as exc:
        return await _retry_storage_fault(container, job, exc)
    except Exception as exc:
        attempt = job.counted_attempts
        log.warning("job %s %s attempt %d failed: %r", job.name, job.id, attempt, exc)
        if attempt >= job.max_attempts:
            return await _bury(
                container,
                job,
                PermanentJobError("processing_failed", "processing failed; please try again"),
                detail=traceback.format_exc(),
            )
        delay = retry_delay(
            attempt, settings.job_retry_base_seconds, settings.job_retry_max_seconds
        )
        await queue.retry(job, traceback.format_exc(), delay)
        return "retried"
    await queue.complete(job)
    return "done"


@contextlib.asynccontextmanager
async def _lease_kept(container: Container, job: ClaimedJob) -> AsyncIterator[None]:
    """Renew the job's lease while its handler works: a lease is how a dead worker's jobs come
    back, and a slow one (a huge photo, a stalled disk) must not be claimed again meanwhile,
    let alone buried as "kept failing" while it is about to succeed. Only up to
    `job_max_run_seconds`: a handler hung for good lets the lease lapse like a dead worker."""
    settings = container.settings
    every = max(0.05, (job.lease_seconds or settings.job_lease_seconds) / 3)
    give_up_at = time.monotonic() + settings.job_max_run_seconds
    done = asyncio.Event()

    async def renew() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), every)
            if done.is_set():
                return
            if time.monotonic() >= give_up_at:
                log.warning("job %s %s runs too long; letting its lease lapse", job.name, job.id)
                return
            try:
                if not await container.queue.extend(job):
                    log.warning("job %s %s lost its lease; it may run twice", job.name, job.id)
                    return
            except Exception:
                log.exception("renewing the lease of job %s %s failed", job.name, job.id)

    # Stopped by the event rather than cancelled, so that a renewal under way finishes cleanly.
    renewing = asyncio.create_task(renew())
    try:
        yield
    finally:
        done.set()
        await renewing


async def _bury(
    container: Container, job: ClaimedJob, error: PermanentJobError, detail: str = ""
) -> str:
    spec = registry.get(job.name)
    if spec.on_dead is not None:
        # on_dead is what tells the user (say, marks the post failed): a job is buried only
        # after it ran. If it fails, the job comes back later and tries again, exactly as when
        # the process dies right here; on_dead handlers are idempotent like every handler.
        try:
            await spec.on_dead(container, job.payload, error)
        except Exception:
            log.exception("on_dead of job %s %s failed", job.name, job.id)
            settings = container.settings
            delay = retry_delay(
                job.counted_attempts,
                settings.job_retry_base_seconds,
                settings.job_retry_max_seconds,
            )
            reason = f"{error.code}: {error.message}\n{traceback.format_exc()}"
            await container.queue.retry(job, reason, delay)
            return "retried"
    await container.queue.bury(job, f"{error.code}: {error.message}\n{detail}")
    return "dead"


# The first line of a last_error that _retry_storage_fault left: since when, and how many times.
_STORAGE_FAULT = re.compile(r"storage_unavailable since ([0-9.]+) \(([0-9]+) times\): ")


async def _retry_storage_fault(
    container: Container, job: ClaimedJob, error: StorageUnavailable
) -> str:
    """The store is full, read-only or failing: nothing the job did, and it usually comes back.
    Retry without counting the attempt, at most `storage_retry_max_delay_seconds` apart (so work
    resumes within that of storage coming back), for `storage_retry_window_seconds` from the
    first of these faults in a row; only then is the job buried."""
    settings = container.settings
    now = time.time()
    since, times = now, 0
    match = _STORAGE_FAULT.match(job.last_error or "")
    if match:
        since, times = float(match.group(1)), int(match.group(2))
    times += 1
    if now - since >= settings.storage_retry_window_seconds:
        return await _bury(
            container,
            job,
            PermanentJobError(
                "storage_unavailable",
                "The media store stayed unavailable too long; please upload the photo again.",
            ),
            detail=traceback.format_exc(),
        )
    delay = retry_delay(
        times, settings.job_retry_base_seconds, settings.storage_retry_max_delay_seconds
    )
    log.warning(
        "job %s %s: storage unavailable (%d times in a row); retrying in %.0f s: %s",
        job.name,
        job.id,
        times,
        delay,
        error.message,
    )
    reason = f"storage_unavailable since {since:.3f} ({times} times): {error.message}"
    await container.queue.retry(
        job, f"{reason}\n{traceback.format_exc()}", delay, count_attempt=False
    )
    return "retried"


# The first line of a last_error that _bury left: "<code>: <message>" (a traceback's first
# line, "Traceback (most recent call last):", never looks like that).
_REASON = re.compile(r"([a-z][a-z0-9_]*): (.+)")


def _reason_left_by(last_error: str | None) -> PermanentJobError | None:
    match = _REASON.fullmatch((last_error or "").split("\n", 1)[0])
    return PermanentJobError(match.group(1), match.group(2)) if match else None


async def schedule_periodic_jobs(container: Container) -> None:
    """Make sure each periodic job has one run waiting (workers call this now and then; the
    first to find one missing enqueues it)."""
    for spec in registry.periodic():
        assert spec.every is not None
        async with container.db.write() as session:
            await ensure_pending(
                session,
                container.ids,
                spec.name,
                max_attempts=container.settings.job_max_attempts,
                delay_seconds=spec.every,
            )


async def run_worker(container: Container, stop: asyncio.Event, concurrency: int = 1) -> None:
    """Claim and run jobs until `stop` is set; a job in progress is finished first."""
    await check_registered_handlers(container)

    async def keep_periodic_jobs_scheduled() -> None:
        while not stop.is_set():
            try:
                await schedule_periodic_jobs(container)
            except Exception:
                log.exception("scheduling periodic jobs failed")
            try:
                # At start (a restarted worker finds its dead predecessor's jobs) and now and
                # then (a sibling's death): minutes sooner than their leases would give them.
                released = await container.queue.release_jobs_of_dead_workers()
                if released:
                    log.warning("gave back %d jobs of workers that died", released)
            except Exception:
                log.exception("giving back the jobs of dead workers failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), periodic_check_seconds())

    async def idle(names: set[str]) -> None:
        try:
            await container.queue.wait_for_work(names, 1.0)
        except Exception:
            # The next claim tries the queue again (and backs off if it fails too).
            log.exception("waiting for work failed")

    async def lane(names: set[str], lease_seconds: float | None) -> None:
        while not stop.is_set():
            try:
                job = await container.queue.claim(names, lease_seconds=lease_seconds)
            except Exception:
                log.exception("claiming a job failed")
                job = None
                await asyncio.sleep(1.0)
            if job is None:
                waiter = asyncio.ensure_future(idle(names))
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    # Also when this lane is cancelled (its worker torn down outright): a look
                    # at the queue left running would outlive the container it reads, and a
                    # task nobody owns is one an event loop's close waits on forever.
                    for task in (waiter, stopper):
                        task.cancel()
                    await asyncio.wait({waiter, stopper})
                continue
            try:
                await _run_until_stopped(container, job, stop)
            except Exception:
                # The queue itself failed us; the lease will run out and the job come back.
                log.exception("job %s %s could not be settled", job.name, job.id)

    # Short jobs (photos, fan-out, purges) in `concurrency` lanes; videos in lanes of their own,
    # under their longer lease, so that a photo never waits for a transcode to finish.
    short = registry.names(DEFAULT_LANE)
    videos = registry.names(VIDEO_LANE)
    video_lanes = container.settings.video_worker_concurrency if videos else 0
    lanes = [lane(short, None) for _ in range(max(1, concurrency))]
    lanes += [lane(videos, container.settings.video_job_lease_seconds) for _ in range(video_lanes)]
    try:
        # A task group, not gather: cancelled, gather ends as soon as its first child has, and
        # leaves the others still unwinding (a query being torn down) while the caller closes
        # the container under them; a group waits until every child has ended.
        async with asyncio.TaskGroup() as group:
            group.create_task(keep_periodic_jobs_scheduled())
            for each in lanes:
                group.create_task(each)
    finally:
        await asyncio.to_thread(decoding.shutdown)


async def _run_until_stopped(container: Container, job: ClaimedJob, stop: asyncio.Event) -> None:
    """run_job; should the worker be told to stop meanwhile, the job has
    `shutdown_grace_seconds` more to finish, and is then cancelled and given back at once, its
    attempt not counted: a stop (a deploy, a rolling restart) neither waits on a long transcode
    nor leaves its job to a lease that runs out minutes later."""
    running = asyncio.ensure_future(run_job(container, job))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            await asyncio.wait({running}, timeout=container.settings.shutdown_grace_seconds)
        if running.done():
            running.result()
            return
        running.cancel()
        # Until it has unwound. (asyncio.wait raises nothing of the job's; a CancelledError
        # out of it is this lane's own, and goes on up.)
        await asyncio.wait({running})
        await container.queue.retry(
            job, "the worker stopped before the job finished; given back", 0.0, count_attempt=False
        )
        log.warning("job %s %s given back: the worker is stopping", job.name, job.id)
    finally:
        stopping.cancel()
        if not running.done():
            # This lane is being cancelled (its worker torn down outright) while the job runs:
            # the job goes too, rather than run on in a task nobody owns, renewing its lease
            # and using a container that is being closed. Its lease brings it back.
            running.cancel()
            await asyncio.wait({running})


async def drain(
    container: Container, *, max_jobs: int = 10_000, settle_seconds: float = 10.0
) -> int:
    """Run due jobs until none is left (tests and tools); returns how many were run."""
    names = registry.names()
    ran = 0
    waited_since: float | None = None
    while ran < max_jobs:
        job = await container.queue.claim(names)
        if job is None:
            # A broker delivers what is due a moment after it is committed: while the table
            # still counts due jobs, wait for them (a while, at most, without one arriving).
            if not (await container.queue.state_counts()).get("queued"):
                return ran
            waited_since = waited_since or time.monotonic()
            if time.monotonic() - waited_since >= settle_seconds:
                return ran
            await container.queue.wait_for_work(names, 0.1)
            continue
        waited_since = None
        await run_job(container, job)
        ran += 1
    return ran
