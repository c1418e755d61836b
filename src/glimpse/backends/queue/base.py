"""The queue contract, seen from the consuming side.

Producers never talk to a backend: they add an outbox row to their own transaction (outbox.py).
The embedded backend consumes that table directly; a broker backend relays it to the broker.
Either way a job is delivered at least once, so every handler must be idempotent.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    name: str
    payload: dict[str, Any]
    attempts: int  # claims, including this one
    max_attempts: int
    last_error: str | None = None  # what the previous attempt left, if it failed
    lease_seconds: float | None = None  # the lease it was claimed under, if not the queue's own
    deaths: int = 0  # earlier runs that ended with their worker dead (not counted as attempts)

    @property
    def counted_attempts(self) -> int:
        """Attempts that count against max_attempts, this one included: a run cut short by
        its worker's death on this machine (a kill, a deploy, the OOM killer) does not."""
        return self.attempts - self.deaths

    @property
    def exhausted(self) -> bool:
        return self.counted_attempts > self.max_attempts


class JobConsumer(Protocol):
    async def claim(
        self, names: Collection[str], *, lease_seconds: float | None = None
    ) -> ClaimedJob | None:
        """Take the next due job of one of these names under a lease (the queue's own, or
        `lease_seconds`: a video's transcode holds a longer one), or None when nothing is due.
        (A worker claims only what it has handlers for: during a rolling upgrade, jobs that
        only newer code knows wait for newer workers.)"""

    async def extend(self, job: ClaimedJob) -> bool:
        """Renew the lease of a job still running (the worker calls it while the handler works,
        so a slow job is not claimed a second time), for as long as it was claimed for. False
        when the job is no longer ours."""

    async def complete(self, job: ClaimedJob) -> None:
        """The work is stored: forget the job."""

    async def retry(
        self, job: ClaimedJob, error: str, delay_seconds: float, *, count_attempt: bool = True
    ) -> None:
        """Give the job back to run again after `delay_seconds`. With count_attempt=False this
        run does not count against max_attempts (the fault was not the job's: storage was down)."""

    async def bury(self, job: ClaimedJob, error: str) -> None:
        """Move the job to dead letters, where operators can see it."""

    async def release_jobs_of_dead_workers(self) -> int:
        """Give back the running jobs of workers on this machine that have died (a kill, a
        crash), rather than let them wait out their leases; returns how many. The run counts as
        a death, not an attempt (death_delay says when it is due again). (Workers elsewhere are
        left to their leases, which count as attempts: their deaths cannot be seen from here,
        and a run that outlived its lease may as well have hung.)"""

    async def wait_for_work(self, names: Collection[str], timeout: float) -> None:
        """Return as soon as a job of one of these names may be due, or after `timeout`."""

    async def pending_names(self) -> set[str]:
        """Names of the jobs waiting to run (checked against the registry at start-up)."""

    async def state_counts(self) -> dict[str, int]:
        """How many jobs are queued (due now), scheduled (due later: retries, periodic runs,
        delayed purges), running and dead (for /metrics)."""

    async def oldest_due_age(self) -> float:
        """Seconds the longest-waiting due job has waited since it became due (0 when none is):
        a queue falling behind shows here before anyone's post is late enough to be noticed."""

    async def check(self) -> None:
        """A real round trip for /readyz."""

    async def close(self) -> None: ...


def death_delay(deaths: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """When a job whose worker died under it may run again, after its `deaths`-th such death:
    at once the first time (a deploy or one OOM kill says nothing about the job), then backing
    off like a retry. A job that kills every worker it runs on thus kills them ever more
    slowly, and other jobs run meanwhile instead of each new worker taking it first."""
    return 0.0 if deaths <= 1 else retry_delay(deaths - 1, base, cap, rng)


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: base * 2^(attempt-1) scaled by a factor in [0.5, 1.5), so
    that jobs that failed together do not all come back together, and never more than `cap`."""
    rng = rng or random.Random()
    # A float power: past 2^1023 it becomes inf, which min() caps, where an int would overflow.
    delay = base * 2.0 ** min(max(0, attempt - 1), 1023)
    return min(cap, delay * (0.5 + rng.random()))
