"""A worker task cancelled outright (a test's or a tool's teardown, a gather that lost a sibling)
while a lane runs a job: the job goes with it, rather than run on in a task nobody owns, renewing
its lease, using a container being closed under it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from glimpse.container import Container
from glimpse.jobs import Payload
from glimpse.worker import run_worker
from tests.integration.test_sql_queue import MakeContainer, add_job, make_container, register

__all__ = ["make_container"]  # (the fixture, shared with test_sql_queue.py)


async def test_a_worker_cancelled_while_a_job_runs_cancels_the_job(
    make_container: MakeContainer,
) -> None:
    started, seen = asyncio.Event(), []

    async def endless(container: Container, payload: Payload) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    name = register(endless)
    container = make_container(shutdown_grace_seconds=30, job_lease_seconds=600)
    await add_job(container, name)
    # The idle lanes' look at the queue takes a while to unwind once cancelled (as a query
    # being torn down in a thread does): the worker must wait for it, not leave it running.
    wait_for_work, waiting = container.queue.wait_for_work, asyncio.Event()

    async def slow_to_unwind(names: Any, timeout: float) -> None:
        waiting.set()
        try:
            await wait_for_work(names, timeout)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)
            raise

    container.queue.wait_for_work = slow_to_unwind  # type: ignore[method-assign]
    before = asyncio.all_tasks()
    worker = asyncio.create_task(run_worker(container, asyncio.Event()))
    await asyncio.wait_for(started.wait(), timeout=30)
    await asyncio.wait_for(waiting.wait(), timeout=30)  # (a video lane, idle meanwhile)
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(worker, timeout=30)
    assert seen == ["cancelled"]  # not still sleeping in a task nobody owns
    # Nor anything else of the worker's (a lane's look at the queue, another lane's query
    # being torn down) still running once it has ended: the caller closes the container next.
    left = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert not left, [task.get_coro() for task in left]
