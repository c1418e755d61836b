"""RabbitMQ under trouble, with real workers: a worker killed mid-job, the broker dropping every
connection (as a restart does; the machine's broker is shared, so it is not restarted), a job
buried to the dead-letter queue, and an upload while the broker cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from glimpse.app import create_app
from glimpse.backends.queue.outbox import enqueue
from glimpse.config import Settings
from glimpse.container import Container, build_container
from glimpse.jobs import Payload, registry
from glimpse.worker import run_worker
from tests.broker import Broker, broker  # noqa: F401  (the session's vhost)
from tests.conftest import Glimpse, _no_server_error
from tests.databases import migrate

pytestmark = pytest.mark.rabbitmq

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def queue_url(broker: Broker) -> str:  # noqa: F811
    return broker.url(prefix=f"w{uuid.uuid4().hex[:8]}.")


@pytest.fixture
async def make_container(
    settings: Settings, queue_url: str
) -> AsyncIterator[Callable[..., Container]]:
    migrate(settings.resolved_database_url)
    made: list[Container] = []

    def make(node_id: int = 1, **overrides: Any) -> Container:
        container = build_container(
            settings.model_copy(update={"queue_url": queue_url, **overrides}), node_id=node_id
        )
        made.append(container)
        return container

    yield make
    for container in made:
        await container.close()


async def add_job(container: Container, name: str, max_attempts: int = 3) -> int:
    async with container.db.write() as session:
        return enqueue(session, container.ids, name, {}, max_attempts=max_attempts)


async def rows_of(container: Container, name: str) -> list[tuple[str, int]]:
    """The state and attempts of each job of this name (the workers' periodic jobs aside)."""
    async with container.db.read() as session:
        result = await session.execute(
            text("SELECT state, attempts FROM jobs WHERE name = :name"), {"name": name}
        )
        return [(state, attempts) for state, attempts in result]


async def eventually(check: Callable[[], Any], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def worker(container: Container) -> AsyncIterator[None]:
    stop = asyncio.Event()
    running = asyncio.create_task(run_worker(container, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


async def test_a_buried_job_lands_in_the_dead_letter_queue(
    make_container: Callable[..., Container], queue_url: str
) -> None:
    container = make_container()
    name = f"rabbit_{uuid.uuid4().hex[:12]}"

    async def hopeless(container: Container, payload: Payload) -> None:
        raise RuntimeError("always")

    registry.job(name)(hopeless)
    await add_job(container, name, max_attempts=2)

    async def dead_lettered() -> bool:
        return [state for state, _ in await rows_of(container, name)] == ["dead"]

    async with worker(container):
        await eventually(dead_lettered, 30)
    import aio_pika  # an optional extra: tests.broker says when it is missing

    url, prefix = queue_url.split("?prefix=")
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        dead = await channel.declare_queue(
            f"{prefix}dead", durable=True, arguments={"x-queue-type": "quorum"}
        )
        assert dead.declaration_result.message_count == 1


async def test_a_job_marked_relayed_whose_message_never_reached_the_broker_still_runs(
    settings: Settings,
    broker: Broker,  # noqa: F811
) -> None:
    # As if a relay marked the row and died before its publish (or the broker lost the message).
    migrate(settings.resolved_database_url)
    url = broker.url(prefix=f"s{uuid.uuid4().hex[:8]}.", republish_after="1")
    container = build_container(settings.model_copy(update={"queue_url": url}), node_id=1)
    try:
        name = f"rabbit_{uuid.uuid4().hex[:12]}"

        async def handler(container: Container, payload: Payload) -> None:
            return None

        registry.job(name)(handler)
        job_id = await add_job(container, name)
        async with container.db.write() as session:
            await session.execute(
                text("UPDATE jobs SET locked_by = :marker WHERE id = :id"),
                {"marker": f"relayed@{time.time():.3f}", "id": job_id},
            )

        async def done() -> bool:
            return await rows_of(container, name) == []

        async with worker(container):
            await eventually(done, 30)
    finally:
        await container.close()


async def test_jobs_keep_running_after_the_broker_drops_every_connection(
    make_container: Callable[..., Container],
    broker: Broker,  # noqa: F811
) -> None:
    container = make_container()
    name = f"rabbit_{uuid.uuid4().hex[:12]}"
    ran: list[int] = []
    dropping = asyncio.Event()

    async def handler(container: Container, payload: Payload) -> None:
        if payload.get("drop") and not dropping.is_set():
            # The broker goes away while this job runs: its ack fails, its delivery comes back,
            # and the row (already done) makes the redelivery a no-op.
            dropping.set()
            await asyncio.to_thread(broker.drop_connections)
        ran.append(int(payload["n"]))

    registry.job(name)(handler)

    async def enqueue_n(n: int, **extra: Any) -> None:
        async with container.db.write() as session:
            enqueue(session, container.ids, name, {"n": n, **extra}, max_attempts=3)

    async def done() -> bool:
        return await rows_of(container, name) == []

    async with worker(container):
        await enqueue_n(1)
        await eventually(done, 30)
        await asyncio.to_thread(broker.drop_connections)
        await enqueue_n(2)
        await eventually(done, 60)
        await enqueue_n(3, drop=True)
        await eventually(done, 60)
        await enqueue_n(4)
        await eventually(done, 60)
        await asyncio.sleep(2)  # a redelivery, if any, would run now
    assert ran == [1, 2, 3, 4]


async def test_a_worker_killed_mid_job_loses_nothing_and_the_job_finishes_after_a_restart(
    settings: Settings, queue_url: str, tmp_path: Path
) -> None:
    migrate(settings.resolved_database_url)
    name = f"rabbit_{uuid.uuid4().hex[:12]}"
    marks = tmp_path / "marks"
    marks.touch()

    def start_worker(seconds: float) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.rabbit_worker_probe",
                str(settings.data_dir),
                queue_url,
                name,
                str(marks),
                str(seconds),
            ],
            cwd=ROOT,
        )

    first = start_worker(600)
    container = build_container(settings, node_id=1)  # only to enqueue and look
    try:

        async def handler(container: Container, payload: Payload) -> None:
            return None

        registry.job(name)(handler)
        await add_job(container, name)

        async def started() -> bool:
            return "start" in marks.read_text()

        await eventually(started, 60)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = start_worker(0)
        try:

            async def finished() -> bool:
                return "done" in marks.read_text() and await rows_of(container, name) == []

            started_at = time.monotonic()
            await eventually(finished, 60)
            assert time.monotonic() - started_at < 60
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        lines = marks.read_text().split()
        assert lines.count("done") == 1
    finally:
        if first.poll() is None:
            first.kill()
        await container.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_upload_while_the_broker_is_down_is_accepted_and_processed_once_it_is_back(
    settings: Settings, queue_url: str
) -> None:
    from tests.conftest import jpeg_bytes

    migrate(settings.resolved_database_url)
    down = settings.model_copy(
        update={"queue_url": f"amqp://guest:guest@127.0.0.1:{closed_port()}/"}
    )
    app = create_app(down)
    async with app.router.lifespan_context(app):
        transport = httpx_transport(app)
        async with transport as client:
            glimpse = Glimpse(client, app.state.container)
            headers = await glimpse.signup()
            response = await glimpse.upload(headers, files=[("p.jpg", jpeg_bytes())])
            assert response.status_code == 202, response.text
            post_id = response.json()["id"]
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["queue"] != "ok"
            assert ready.json()["checks"]["database"] == "ok"

            # The broker is back (a worker pointed at the real one): the outbox's job is relayed.
            back = build_container(settings.model_copy(update={"queue_url": queue_url}), node_id=3)
            try:

                async def post_ready() -> bool:
                    post = await client.get(f"/api/v1/posts/{post_id}", headers=headers)
                    return bool(post.json()["status"] == "ready")

                async with worker(back):
                    await eventually(post_ready, 60)
            finally:
                await back.close()


def httpx_transport(app: Any) -> Any:
    import httpx

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://glimpse.test",
        event_hooks={"response": [_no_server_error]},
    )
