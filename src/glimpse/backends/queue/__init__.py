"""Chooses the queue backend from GLIMPSE_QUEUE_URL."""

from __future__ import annotations

from glimpse.backends.queue.base import ClaimedJob, JobConsumer
from glimpse.backends.queue.sql import SqlJobQueue
from glimpse.db.database import Database


def queue_from_url(
    url: str, db: Database, *, worker_name: str, lease_seconds: float, poll_seconds: float
) -> JobConsumer:
    if url.startswith("sql:"):
        return SqlJobQueue(
            db, worker_name=worker_name, lease_seconds=lease_seconds, poll_seconds=poll_seconds
        )
    if url.startswith(("amqp://", "amqps://")):
        # Imported here: aio-pika is an optional extra (`pip install glimpse[rabbitmq]`).
        from glimpse.backends.queue.rabbitmq import RabbitJobQueue

        return RabbitJobQueue(
            url, db, worker_name=worker_name, lease_seconds=lease_seconds, poll_seconds=poll_seconds
        )
    raise ValueError(f"unsupported queue URL {url!r} (supported: sql://, amqp://, amqps://)")


__all__ = ["ClaimedJob", "JobConsumer", "SqlJobQueue", "queue_from_url"]
