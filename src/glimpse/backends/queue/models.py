from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from glimpse.db.base import Base, utcnow


class JobState:
    QUEUED = "queued"
    RUNNING = "running"
    DEAD = "dead"


class Job(Base):
    """The outbox and, on the embedded backend, the queue itself.

    `available_at` (Unix seconds) is when the job may next be claimed: its run time while queued,
    its lease expiry while running. A worker that dies holding a job therefore gives it back
    simply by letting the lease run out. Finished jobs are deleted; dead ones stay for operators.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index(
            "ix_jobs_claimable",
            "available_at",
            sqlite_where=text("state != 'dead'"),
            postgresql_where=text("state != 'dead'"),
        ),
        Index("ix_jobs_owner_state", "owner", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED)
    # Claims so far: each claim adds one, so (id, attempts) names one run of the job, which the
    # late writes of a run that lost its lease, and a broker's stale news, are told apart by.
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int]
    # How many of those runs ended with their worker dead on this machine (killed, out of
    # memory: its process gone; a lease that ran out is an attempt): not the job's failures, so
    # they do not count against max_attempts, and a job is buried for them only after
    # `job_max_worker_deaths`, in case it is what kills its workers.
    deaths: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    available_at: Mapped[float] = mapped_column(Float)
    locked_by: Mapped[str | None] = mapped_column(String(64), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # Whose work this is (an account id), so that claims can be fair across accounts; None for
    # the system's own jobs (purges, sweeps).
    owner: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
