"""The embedded queue: workers claim rows of the jobs table under a lease.

A claim is one UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING statement, so two workers can
never take the same job; on PostgreSQL the inner SELECT adds FOR UPDATE SKIP LOCKED so that they do
not queue behind each other either.

Claims are fair across accounts (a job's `owner`): among due jobs, the account with the fewest
jobs running goes first, then the one with the fewest waiting, then the one waiting longest; and
its oldest due job is taken. One account's 20-photo post of slow files therefore delays another
account's single photo by at most one job per worker, not twenty.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection
from typing import Any

from sqlalchemy import bindparam, text

from glimpse.backends.queue.base import ClaimedJob, death_delay
from glimpse.db.database import Database
from glimpse.holders import is_dead_local_holder

_LAST_ERROR_CHARS = 4000

# A claim: the row is running under this worker's lease, its attempt counted.
_CLAIM = (
    "UPDATE jobs SET state = 'running', attempts = attempts + 1,"
    " available_at = :lease_until, locked_by = :worker"
)
_CLAIMED = "RETURNING id, name, payload, attempts, max_attempts, last_error, deaths"


class SqlJobQueue:
    def __init__(
        self,
        db: Database,
        *,
        worker_name: str,
        lease_seconds: float,
        poll_seconds: float,
        retry_base_seconds: float = 2.0,
        retry_max_seconds: float = 600.0,
    ) -> None:
        self._db = db
        self._worker = worker_name
        self._lease = lease_seconds
        self._poll = poll_seconds
        self._retry_base = retry_base_seconds
        self._retry_max = retry_max_seconds
        skip_locked = "" if db.is_sqlite else " FOR UPDATE SKIP LOCKED"
        due = "state != 'dead' AND available_at <= :now AND name IN :names"
        self._claim_sql = text(
            f"{_CLAIM} WHERE id = ("
            # The account to serve: grouped over due jobs only, so it costs one pass over them
            # (and a count of running jobs per account that has any due).
            " WITH chosen AS (SELECT owner FROM jobs AS waiting"
            f" WHERE {due} GROUP BY owner ORDER BY"
            " (SELECT count(*) FROM jobs AS running WHERE running.owner = waiting.owner"
            " AND running.state = 'running' AND running.available_at > :now),"
            " count(*), min(available_at) LIMIT 1)"
            # (COALESCE: the system's own jobs have no owner, and NULL equals nothing.)
            f" SELECT id FROM jobs WHERE {due}"
            " AND COALESCE(owner, -1) = (SELECT COALESCE(owner, -1) FROM chosen)"
            f" ORDER BY available_at LIMIT 1{skip_locked}) {_CLAIMED}"
        ).bindparams(bindparam("names", expanding=True))
        claim_id = f"{_CLAIM} WHERE id = :id AND state != 'dead' AND available_at <= :now"
        self._claim_id_sql = text(f"{claim_id} {_CLAIMED}")
        self._claim_id_at_sql = text(f"{claim_id} AND attempts = :attempts {_CLAIMED}")

    async def claim(
        self, names: Collection[str], *, lease_seconds: float | None = None
    ) -> ClaimedJob | None:
        return await self._claim(self._claim_sql, {"names": sorted(names)}, lease_seconds)

    async def claim_id(
        self, job_id: int, *, lease_seconds: float | None = None, attempts: int | None = None
    ) -> ClaimedJob | None:
        """Claim this one job if it is due and not dead (a broker delivered news of it), else
        None: done, rescheduled, dead, or running under another's lease. The same claim as
        claim()'s, so that the row alone decides who runs a job whatever the backend.

        With `attempts` (the row's count when the news was published), only if no claim took
        the row since: news of a run that was cut short (its worker died) is stale, and the
        row's next publication, not that one, brings the job back."""
        if attempts is None:
            return await self._claim(self._claim_id_sql, {"id": job_id}, lease_seconds)
        params = {"id": job_id, "attempts": attempts}
        return await self._claim(self._claim_id_at_sql, params, lease_seconds)

    async def _claim(
        self, statement: Any, params: dict[str, Any], lease_seconds: float | None
    ) -> ClaimedJob | None:
        now = time.time()
        lease = self._lease if lease_seconds is None else lease_seconds
        async with self._db.write() as session:
            row = (
                await session.execute(
                    statement,
                    {**params, "now": now, "lease_until": now + lease, "worker": self._worker},
                )
            ).one_or_none()
        if row is None:
            return None
        return ClaimedJob(
            id=row.id,
            name=row.name,
            payload=json.loads(row.payload),
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            last_error=row.last_error,
            lease_seconds=lease_seconds,
            deaths=row.deaths,
        )

    # Each of these touches the row only while this worker still holds it: after a lease ran
    # out and another worker claimed the job, the late first worker must not undo the second.
    _OWNED = "id = :id AND locked_by = :worker AND attempts = :attempts AND state = 'running'"

    async def extend(self, job: ClaimedJob) -> bool:
        async with self._db.write() as session:
            result = await session.execute(
                text(f"UPDATE jobs SET available_at = :lease_until WHERE {self._OWNED}"),
                {
                    **self._owner(job),
                    "lease_until": time.time() + (job.lease_seconds or self._lease),
                },
            )
        return bool(getattr(result, "rowcount", 0))

    async def complete(self, job: ClaimedJob) -> None:
        async with self._db.write() as session:
            await session.execute(text(f"DELETE FROM jobs WHERE {self._OWNED}"), self._owner(job))

    async def retry(
        self, job: ClaimedJob, error: str, delay_seconds: float, *, count_attempt: bool = True
    ) -> None:
        refund = "" if count_attempt else ", attempts = attempts - 1"
        async with self._db.write() as session:
            await session.execute(
                text(
                    "UPDATE jobs SET state = 'queued', available_at = :at, locked_by = NULL,"
                    f" last_error = :error{refund} WHERE {self._OWNED}"
                ),
                {
                    **self._owner(job),
                    "at": time.time() + delay_seconds,
                    "error": error[-_LAST_ERROR_CHARS:],
                },
            )

    async def bury(self, job: ClaimedJob, error: str) -> None:
        async with self._db.write() as session:
            await session.execute(
                text(
                    "UPDATE jobs SET state = 'dead', locked_by = NULL, last_error = :error"
                    f" WHERE {self._OWNED}"
                ),
                {**self._owner(job), "error": error[-_LAST_ERROR_CHARS:]},
            )

    def _owner(self, job: ClaimedJob) -> dict[str, object]:
        return {"id": job.id, "worker": self._worker, "attempts": job.attempts}

    async def release_jobs_of_dead_workers(self) -> int:
        async with self._db.read() as session:
            holders = (
                await session.execute(
                    text("SELECT DISTINCT locked_by FROM jobs WHERE state = 'running'")
                )
            ).scalars()
            dead = [h for h in holders if h and is_dead_local_holder(h)]
        released = 0
        for holder in dead:
            # A death, not an attempt: whatever killed the worker (a deploy, the OOM killer, an
            # operator) was most likely not this job, and a few kills in a row must not bury
            # it. `attempts` is left as it is: with the id it names the run, and a broker's
            # news of the run that died must stay stale. The worker buries a job after
            # job_max_worker_deaths of these, in case it is the job that kills its workers.
            async with self._db.write() as session:
                jobs = (
                    await session.execute(
                        text(
                            "SELECT id, deaths FROM jobs"
                            " WHERE state = 'running' AND locked_by = :holder"
                        ),
                        {"holder": holder},
                    )
                ).all()
                for job_id, deaths in jobs:
                    delay = death_delay(deaths + 1, self._retry_base, self._retry_max)
                    result = await session.execute(
                        text(
                            "UPDATE jobs SET state = 'queued', available_at = :at,"
                            " locked_by = NULL, deaths = deaths + 1, last_error = :error"
                            " WHERE id = :id AND state = 'running' AND locked_by = :holder"
                        ),
                        {
                            "id": job_id,
                            "at": time.time() + delay,
                            "holder": holder,
                            "error": f"The worker running it ({holder}) died"
                            f" ({deaths + 1} times so far); given back in {delay:.0f} s.",
                        },
                    )
                    released += getattr(result, "rowcount", 0) or 0
        return released

    async def wait_for_work(self, names: Collection[str], timeout: float) -> None:
        # Other processes cannot wake us on SQLite, so look often; the look is one indexed read.
        # Only jobs we could claim count: one we have no handler for must not wake us up.
        deadline = time.monotonic() + timeout
        query = text(
            "SELECT min(available_at) FROM jobs WHERE state != 'dead' AND name IN :names"
        ).bindparams(bindparam("names", expanding=True))
        while True:
            async with self._db.read() as session:
                due = (await session.execute(query, {"names": sorted(names)})).scalar()
            if due is not None and due <= time.time():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(self._poll, left))

    async def pending_names(self) -> set[str]:
        async with self._db.read() as session:
            rows = await session.execute(
                text("SELECT DISTINCT name FROM jobs WHERE state != 'dead'")
            )
            return {name for (name,) in rows}

    async def state_counts(self) -> dict[str, int]:
        async with self._db.read() as session:
            rows = await session.execute(
                text(
                    "SELECT CASE WHEN state = 'queued' AND available_at > :now"
                    " THEN 'scheduled' ELSE state END AS kind, count(*) FROM jobs GROUP BY kind"
                ),
                {"now": time.time()},
            )
            return {kind: count for kind, count in rows}

    async def oldest_due_age(self) -> float:
        now = time.time()
        async with self._db.read() as session:
            oldest = (
                await session.execute(
                    text(
                        "SELECT min(available_at) FROM jobs"
                        " WHERE state = 'queued' AND available_at <= :now"
                    ),
                    {"now": now},
                )
            ).scalar()
        return max(0.0, now - oldest) if oldest is not None else 0.0

    async def check(self) -> None:
        async with self._db.read() as session:
            await session.execute(text("SELECT count(*) FROM jobs WHERE state = 'dead'"))

    async def close(self) -> None:
        return None
