"""The RabbitMQ queue (GLIMPSE_QUEUE_URL=amqp://...): the jobs table stays the outbox and the
record of each job's state; RabbitMQ carries the news that a job is due to whichever worker
is free, instead of every worker polling the table.

- Producers do not change: enqueue() writes the row in the request's transaction, so an upload
  during a broker outage still succeeds; the relay (relay.py, run by each worker) publishes due
  rows with publisher confirms to one durable quorum queue per job kind.
- A worker holds a delivery while the job runs and acks it only after the handler's work is
  stored and the row settled (deleted, rescheduled or dead). A worker that dies gives its
  deliveries back to the broker; the claim on the row (state, lease) decides who runs a job, so
  a redelivery of a job that runs elsewhere, or is already done, is acked and dropped.
- A message names the attempt it announces (the row's count when published), and claims only
  that one: the broker puts a dead worker's delivery back at the head of the queue, so were it
  claimed, a job that was running when its worker died would be the next to run, on every
  worker, each death costing one of its attempts, until it is buried. It is dropped instead;
  the relay publishes the row again (given back, or its lease out) behind the jobs already
  waiting, as the jobs table orders it.
- Retries with backoff: retry() reschedules the row and acks the delivery; the relay publishes
  it again when it is due (durable, as the delay lives in the database and not in a timer).
- bury() marks the row dead and rejects the delivery, which the queue dead-letters to
  `<prefix>dead`; so does the broker with a message delivered `delivery_limit` times.
- Long jobs: the delivery is held for as long as the job runs, so the broker's
  `consumer_timeout` (rabbitmq.conf; 30 minutes by default, per queue only from 3.12) must be
  longer than `job_max_run_seconds`. Tripping it closes the channel and redelivers; the row's
  lease still protects the job, so that costs a reconnect, never a lost or doubled job.

Claims are first in, first out per kind: the embedded queue's fairness across accounts is not
kept here (a broker queue cannot reorder by owner).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Collection
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from glimpse.backends.queue.base import ClaimedJob
from glimpse.backends.queue.relay import DueJob, Relay
from glimpse.backends.queue.sql import SqlJobQueue
from glimpse.db.database import Database

log = logging.getLogger("glimpse.queue")

# How long a delivery may wait in this process for a free lane before it is handed back.
UNCLAIMED_SECONDS = 2.0

# Settings read from the URL's query, not passed on to the broker.
_OWN_PARAMS = ("prefix", "prefetch", "delivery_limit", "republish_after")


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """The broker URL without our own query parameters, and those parameters."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    own = {k: v for k, v in query if k in _OWN_PARAMS}
    rest = [(k, v) for k, v in query if k not in _OWN_PARAMS]
    return urlunsplit(parts._replace(query=urlencode(rest))), own


class RabbitJobQueue:
    def __init__(
        self,
        url: str,
        db: Database,
        *,
        worker_name: str,
        lease_seconds: float,
        poll_seconds: float,
        connect_timeout: float = 5.0,
        table: SqlJobQueue | None = None,
    ) -> None:
        self._url, own = split_url(url)
        self._prefix = own.get("prefix", "glimpse.")
        # Deliveries one kind's consumer may hold: best as many as the worker's lanes for it
        # (--concurrency); one that no lane takes soon goes back (UNCLAIMED_SECONDS).
        self._prefetch = int(own.get("prefetch", "4"))
        self._delivery_limit = int(own.get("delivery_limit", "20"))
        self._db = db
        # The jobs table under the broker: claims, leases and deaths are the rows' business.
        self._table = table or SqlJobQueue(
            db, worker_name=worker_name, lease_seconds=lease_seconds, poll_seconds=poll_seconds
        )
        self._worker = worker_name
        self._poll = max(poll_seconds, 0.05)
        self._connect_timeout = connect_timeout
        self._conn: AbstractRobustConnection | None = None
        self._connecting = asyncio.Lock()
        self._publisher: AbstractChannel | None = None
        self._consumer: AbstractChannel | None = None
        self._declared: dict[str, AbstractQueue] = {}
        self._declaring = asyncio.Lock()
        self._consumed: set[str] = set()
        self._buffers: dict[str, deque[tuple[float, AbstractIncomingMessage]]] = {}
        self._arrived = asyncio.Event()
        self._held: dict[tuple[int, int], AbstractIncomingMessage] = {}
        self._wanted: set[str] = set()
        self._relay = Relay(
            db,
            self._publish,
            self._ready_count,
            stale_after=float(own.get("republish_after", "30")),
        )
        self._relaying: asyncio.Task[None] | None = None

    # -- the broker ---------------------------------------------------------------------------

    async def _connection(self) -> AbstractRobustConnection:
        async with self._connecting:
            if self._conn is None:
                # Robust: after the broker restarts or drops us, it reconnects and restores its
                # channels, queues and consumers by itself.
                self._conn = await asyncio.wait_for(
                    aio_pika.connect_robust(
                        self._url, client_properties={"connection_name": self._worker}
                    ),
                    self._connect_timeout,
                )
                self._publisher = await self._conn.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                self._consumer = await self._conn.channel()
                await self._consumer.set_qos(prefetch_count=self._prefetch)
                dead = await self._publisher.declare_exchange(
                    f"{self._prefix}dead", aio_pika.ExchangeType.FANOUT, durable=True
                )
                dead_letters = await self._publisher.declare_queue(
                    f"{self._prefix}dead", durable=True, arguments={"x-queue-type": "quorum"}
                )
                await dead_letters.bind(dead)
            return self._conn

    async def _declare(self, name: str) -> AbstractQueue:
        await self._connection()
        assert self._publisher is not None
        # One declaration at a time: RabbitMQ 3.10 can fail a connection that declares a new
        # quorum queue while another declaration of it is under way.
        async with self._declaring:
            queue = self._declared.get(name)
            if queue is None:
                queue = await self._publisher.declare_queue(
                    self.queue_name(name), durable=True, arguments=self._queue_arguments()
                )
                self._declared[name] = queue
        return queue

    def _queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self._delivery_limit,
            "x-dead-letter-exchange": f"{self._prefix}dead",
        }

    def queue_name(self, name: str) -> str:
        return f"{self._prefix}job.{name}"

    async def _publish(self, job: DueJob) -> None:
        await self._declare(job.name)
        assert self._publisher is not None
        body = json.dumps({"id": job.id, "name": job.name, "attempts": job.attempts}).encode()
        # Confirmed (and returned as an error if no queue took it): the relay marks the row
        # relayed only after this returns.
        await self._publisher.default_exchange.publish(
            aio_pika.Message(
                body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=f"{job.id}.{job.attempts}",
                content_type="application/json",
            ),
            routing_key=self.queue_name(job.name),
            mandatory=True,
        )

    async def _ready_count(self, name: str) -> int:
        # A redeclaration with the same arguments is a no-op that reports the queue's depth.
        await self._declare(name)
        assert self._publisher is not None
        queue = await self._publisher.declare_queue(
            self.queue_name(name),
            durable=True,
            arguments=self._queue_arguments(),
        )
        return int(queue.declaration_result.message_count or 0)

    async def _consume(self, names: Collection[str]) -> None:
        for name in sorted(set(names) - self._consumed):
            await self._declare(name)
            assert self._consumer is not None
            # Declared on the consuming channel too, so that a reconnect restores the consumer.
            consuming = await self._consumer.declare_queue(
                self.queue_name(name), durable=True, arguments=self._queue_arguments()
            )

            async def on_message(message: AbstractIncomingMessage, name: str = name) -> None:
                self._buffers.setdefault(name, deque()).append((time.monotonic(), message))
                self._arrived.set()

            await consuming.consume(on_message)
            self._consumed.add(name)

    async def _give_back_unclaimed(self) -> None:
        # A delivery no lane of ours took soon (all busy with long jobs, or hung) goes back to
        # the broker for another worker, rather than wait here behind them.
        cutoff = time.monotonic() - UNCLAIMED_SECONDS
        for buffer in self._buffers.values():
            while buffer and buffer[0][0] < cutoff:
                _, message = buffer.popleft()
                await _settle(message.nack(requeue=True))

    def _start(self, names: Collection[str]) -> None:
        self._wanted |= set(names)
        if self._relaying is None or self._relaying.done():
            self._relaying = asyncio.create_task(self._relay_forever())

    async def _relay_forever(self) -> None:
        while True:
            try:
                await self._give_back_unclaimed()
                await self._consume(self._wanted)
                if await self._relay.relay_once(self._wanted):
                    continue  # maybe more than one batch
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The broker is down or reconnecting: the rows wait in the table meanwhile.
                log.warning("relaying jobs to RabbitMQ failed: %r", exc)
                await asyncio.sleep(1.0)
            await asyncio.sleep(self._poll)

    # -- the consumer's contract --------------------------------------------------------------

    async def claim(
        self, names: Collection[str], *, lease_seconds: float | None = None
    ) -> ClaimedJob | None:
        self._start(names)
        for name in sorted(names):
            buffer = self._buffers.get(name)
            while buffer:
                _, message = buffer.popleft()
                job = await self._claim_row(message, lease_seconds)
                if job is not None:
                    self._held[(job.id, job.attempts)] = message
                    return job
                # Done, dead, rescheduled, or running elsewhere: the row decides, and the relay
                # publishes it again whenever it is due again.
                await _settle(message.ack())
        return None

    async def _claim_row(
        self, message: AbstractIncomingMessage, lease_seconds: float | None
    ) -> ClaimedJob | None:
        try:
            news = json.loads(message.body)
            job_id = int(news["id"])
            # (None: published by a version that did not say; any attempt is claimed then.)
            attempts = None if news.get("attempts") is None else int(news["attempts"])
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("dropping a malformed message: %r", message.body[:200])
            return None
        return await self._table.claim_id(job_id, lease_seconds=lease_seconds, attempts=attempts)

    async def extend(self, job: ClaimedJob) -> bool:
        return await self._table.extend(job)

    async def complete(self, job: ClaimedJob) -> None:
        await self._table.complete(job)
        await self._ack(job)

    async def retry(
        self, job: ClaimedJob, error: str, delay_seconds: float, *, count_attempt: bool = True
    ) -> None:
        await self._table.retry(job, error, delay_seconds, count_attempt=count_attempt)
        await self._ack(job)

    async def bury(self, job: ClaimedJob, error: str) -> None:
        await self._table.bury(job, error)
        message = self._held.pop((job.id, job.attempts), None)
        if message is not None:
            await _settle(message.reject(requeue=False))  # to the dead-letter queue

    async def _ack(self, job: ClaimedJob) -> None:
        message = self._held.pop((job.id, job.attempts), None)
        if message is not None:
            await _settle(message.ack())

    async def release_jobs_of_dead_workers(self) -> int:
        # The table's own rule; the relay then publishes what it gave back.
        return await self._table.release_jobs_of_dead_workers()

    async def wait_for_work(self, names: Collection[str], timeout: float) -> None:
        self._start(names)
        deadline = time.monotonic() + timeout
        while not any(self._buffers.get(name) for name in names):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def pending_names(self) -> set[str]:
        return await self._table.pending_names()

    async def state_counts(self) -> dict[str, int]:
        return await self._table.state_counts()

    async def oldest_due_age(self) -> float:
        # The table's: a job is due there whether or not its message sits in the broker.
        return await self._table.oldest_due_age()

    async def check(self) -> None:
        await self._table.check()
        connection = await self._connection()
        # A real round trip: open and close a channel.
        channel = await asyncio.wait_for(connection.channel(), self._connect_timeout)
        await channel.close()

    async def close(self) -> None:
        if self._relaying is not None:
            self._relaying.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._relaying
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


async def _settle(settling: Any) -> None:
    # An ack on a channel that has since closed (the broker restarted, a reconnect) fails: the
    # broker redelivers the message and the claim on the row drops it then.
    try:
        await settling
    except Exception as exc:
        log.info("a delivery could not be settled (it will be redelivered): %r", exc)
