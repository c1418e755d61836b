"""Chooses the queue backend from GLIMPSE_QUEUE_URL."""

from __future__ import annotations

from glimpse.backends.queue.base import ClaimedJob, JobConsumer
from glimpse.backends.queue.sql import SqlJobQueue
from glimpse.db.database import Database


def queue_from_url(
    url: str,
    db: Database,
    *,
    worker_name: str,
    lease_seconds: float,
    poll_seconds: float,
    retry_base_seconds: float = 2.0,
    retry_max_seconds: float = 600.0,
) -> JobConsumer:
    table = SqlJobQueue(
        db,
        worker_name=worker_name,
        lease_seconds=lease_seconds,
        poll_seconds=poll_seconds,
        retry_base_seconds=retry_base_seconds,
        retry_max_seconds=retry_max_seconds,
    )
    if url.startswith("sql:"):
        return table
    if url.startswith(("amqp://", "amqps://")):
        # Imported here: aio-pika is an optional extra (`pip install glimpse[rabbitmq]`).
        from glimpse.backends.queue.rabbitmq import RabbitJobQueue

        return RabbitJobQueue(
            url,
            db,
            worker_name=worker_name,
            lease_seconds=lease_seconds,
            poll_seconds=poll_seconds,
            table=table,
        )
    raise ValueError(f"unsupported queue URL {url!r} (supported: sql://, amqp://, amqps://)")


__all__ = ["ClaimedJob", "JobConsumer", "SqlJobQueue", "queue_from_url"]
