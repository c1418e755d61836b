"""SIGKILL a worker in the middle of a job, again and again, on the embedded default and on the
scale stack: every acknowledged post ends `ready`, in the follower's feed once, with each
variant once; none stays `processing`, no job is left dead or running.

One kill with a 49 MP photo is tests/e2e/test_crash_recovery.py; this one kills whatever job
the worker is running (processing, fan-out, purges, AVIF variants), at a random moment of it.
"""

from __future__ import annotations

import random
import signal
import time

import httpx
import psutil

# Every job's module, as build_container loads them (importing glimpse.container alone
# registers none, and left PERIODIC empty: the kills went to the reapers, and their runs due
# later counted as pipeline jobs waiting, so that nothing was uploaded and nothing was due).
import glimpse.feed.jobs
import glimpse.posts.jobs
import glimpse.privacy.jobs
import glimpse.stories.jobs  # noqa: F401
from glimpse.jobs import registry
from tests.faults.conftest import (
    Stack,
    Tally,
    count_outcomes,
    post_photo,
    sign_up,
    times,
    wait_for,
)
from tests.servers import Server, Worker

KILLS = times("worker_kills", 6)
# A job's second and later worker deaths delay it like retries (queue/base.death_delay); capped
# here so that the jobs the kills hit often still finish within the test's wait.
WORKER_ENV = {"GLIMPSE_JOB_RETRY_BASE_SECONDS": "0.5", "GLIMPSE_JOB_RETRY_MAX_SECONDS": "8"}


# The periodic jobs (reapers, sweeps) are due every few seconds and would take most kills:
# the kills are for the jobs of the upload pipeline (processing, fan-out, purges, AVIF).
PERIODIC = {spec.name for spec in registry.periodic()}
assert PERIODIC, "no periodic job registered: the kills would go to them"


def _running_jobs(stack: Stack, pid: int) -> list[str]:
    rows = stack.rows(
        "SELECT name FROM jobs WHERE state = 'running' AND locked_by LIKE $1", f"%:{pid}:%"
    )
    return [name for (name,) in rows if name not in PERIODIC]


def _pipeline_jobs_waiting(stack: Stack) -> int:
    # Due now: a purge scheduled for later, or a retry backing off, gives the worker nothing.
    rows = stack.rows(
        "SELECT name FROM jobs WHERE state = 'queued' AND available_at <= $1", time.time()
    )
    return sum(name not in PERIODIC for (name,) in rows)


def test_sigkill_a_worker_mid_job(
    stack: Stack, processes: list[Server | Worker], tally: Tally
) -> None:
    rng = random.Random(20)
    server = stack.server()
    processes.append(server)
    with httpx.Client(base_url=server.base, timeout=60) as client:
        alice, bob = sign_up(client, "alice"), sign_up(client, "bob")
        assert client.post("/api/v1/users/alice/follow", headers=bob).status_code == 200
        acknowledged: list[str] = []

        def upload(n: int) -> None:
            for _ in range(n):
                response = post_photo(client, alice, len(acknowledged))
                assert response.status_code == 202, response.text
                acknowledged.append(response.json()["id"])

        upload(4)
        attempts = 0
        while tally.injected < KILLS:
            attempts += 1
            assert attempts < KILLS * 4, f"only {tally.injected} kills landed inside a job"
            # Never run dry, and spread the kills: a kill lands before a photo's job can finish
            # (its decoding child alone takes longer to start), so the jobs waiting take every
            # kill between them (100 kills on 8 posts: 14 to 17 deaths for one job, near the 20
            # that bury a job as the likely killer of its workers, job_max_worker_deaths; on
            # 12 posts, with 8 kept waiting: 10).
            if _pipeline_jobs_waiting(stack) < 8:
                upload(2)
            doomed = stack.worker(0, WORKER_ENV)
            processes.append(doomed)
            deadline = time.monotonic() + 60
            while not (running := _running_jobs(stack, doomed.pid)):
                assert time.monotonic() < deadline, "the worker never took a job"
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.3))  # somewhere inside the job
            children = psutil.Process(doomed.pid).children(recursive=True)
            doomed.process.send_signal(signal.SIGKILL)
            doomed.process.wait(timeout=10)
            # A decoding child outlives its worker only until it sees the parent gone.
            _, alive = psutil.wait_procs(children, timeout=15)
            tally.add("decoders_left_running", len(alive))
            for child in alive:
                child.kill()
            if _running_jobs(stack, doomed.pid):  # the kill came before the job settled
                tally.injected += 1
                for name in running:
                    tally.add(f"killed_in_{name}")
                # The deaths of the job it held, this one included (the next worker to start
                # gives the job back and counts it): how hard the kills hit one job.
                deaths = stack.rows(
                    "SELECT deaths FROM jobs WHERE state = 'running' AND locked_by LIKE $1",
                    f"%:{doomed.pid}:%",
                )
                most = max((d + 1 for (d,) in deaths), default=0)
                tally.counts["most_deaths_of_one_job"] = max(
                    tally.counts.get("most_deaths_of_one_job", 0), most
                )

        survivor = stack.worker(1, WORKER_ENV)
        processes.append(survivor)
        count_outcomes(tally, client, alice, bob, acknowledged)

        # No job left stuck under a dead worker's lease, none buried, none due and waiting.
        def settled() -> bool:
            return not stack.scalar(
                "SELECT count(*) FROM jobs WHERE state = 'running'"
                " OR (state = 'queued' AND available_at <= $1)",
                time.time(),
            )

        wait_for(settled, lambda: stack.rows("SELECT name, state, attempts FROM jobs"), 60)
        tally.add("dead_jobs", stack.scalar("SELECT count(*) FROM jobs WHERE state = 'dead'"))
        tally.add(
            "stuck_processing",
            stack.scalar("SELECT count(*) FROM posts WHERE status = 'processing'"),
        )
        me = client.get("/api/v1/users/alice", headers=alice).json()
        tally.add("post_count_off_by", abs(me["post_count"] - len(acknowledged)))
        assert survivor.stop() == 0
    assert server.stop() == 0
    counts = tally.counts
    assert counts["decoders_left_running"] == 0, counts
    for bad in (
        "lost", "failed", "duplicated_variants", "incomplete_variants", "missing_from_feed",
        "duplicated_feed_entries", "dead_jobs", "stuck_processing", "post_count_off_by",
    ):  # fmt: skip
        assert counts[bad] == 0, counts
