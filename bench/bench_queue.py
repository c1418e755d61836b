"""The queue backends side by side, in one run over the same kind of data: the embedded SQL queue
(workers claim rows of the jobs table) and RabbitMQ (the table as outbox, a relay publishing due
rows to the broker, workers consuming). The handler does nothing, so the figures are the queue's
own cost.

- throughput: `--jobs` jobs enqueued at once (in one transaction), run by `--workers` worker
  processes' worth of lanes (one container each, in this process); jobs per second until the
  last is done.
- latency: jobs enqueued one at a time at `--rate` per second for `--seconds`; the time from the
  enqueue's commit to its handler starting, p50 and p95.

    python bench/bench_queue.py [--jobs 2000] [--workers 2] [--rate 20] [--seconds 10]
        [--amqp amqp://guest:guest@127.0.0.1:5672/]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from glimpse.backends.queue.outbox import enqueue
from glimpse.config import Settings
from glimpse.container import Container, build_container
from glimpse.db.migrate import upgrade_to_head
from glimpse.jobs import Payload, registry
from glimpse.worker import run_worker


async def run_backend(
    queue_url: str, jobs: int, workers: int, rate: float, seconds: float
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            secret_key="bench",
            queue_url=queue_url,
            rate_limits="off",
            # The default's poll: an idle SQL worker looks every 50 ms.
        )
        upgrade_to_head(settings.resolved_database_url)
        name = f"bench_{uuid.uuid4().hex[:10]}"
        started: dict[int, float] = {}
        done = asyncio.Event()
        expected = 0

        async def handler(container: Container, payload: Payload) -> None:
            started[int(payload["n"])] = time.perf_counter()
            if len(started) >= expected:
                done.set()

        registry.job(name)(handler)
        containers = [build_container(settings, node_id=i + 1) for i in range(workers)]
        stop = asyncio.Event()
        running = [asyncio.create_task(run_worker(c, stop)) for c in containers]
        producer = containers[0]
        try:
            # Warm up: connections, queue declarations.
            expected = 1
            await add(producer, name, [-1])
            await asyncio.wait_for(done.wait(), 60)

            # Throughput.
            started.clear()
            done.clear()
            expected = jobs
            t0 = time.perf_counter()
            await add(producer, name, list(range(jobs)))
            await asyncio.wait_for(done.wait(), 600)
            throughput = jobs / (time.perf_counter() - t0)

            # Latency at a steady rate.
            started.clear()
            done.clear()
            count = int(rate * seconds)
            expected = count
            committed: dict[int, float] = {}
            t0 = time.perf_counter()
            for n in range(count):
                await asyncio.sleep(max(0.0, t0 + n / rate - time.perf_counter()))
                await add(producer, name, [n])
                committed[n] = time.perf_counter()
            await asyncio.wait_for(done.wait(), 120)
            waits = sorted((started[n] - committed[n]) * 1000 for n in range(count))
            return {
                "throughput": throughput,
                "p50": statistics.median(waits),
                "p95": waits[int(len(waits) * 0.95) - 1],
            }
        finally:
            stop.set()
            await asyncio.gather(*running, return_exceptions=True)
            for c in containers:
                await c.close()


async def add(container: Container, name: str, numbers: list[int]) -> None:
    async with container.db.write() as session:
        for n in numbers:
            enqueue(session, container.ids, name, {"n": n}, max_attempts=3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    args = parser.parse_args()
    # A vhost of its own where rabbitmqctl can make one (dropped after), else queue names of
    # its own in the URL's vhost (left behind).
    vhost = f"glimpse-bench-{uuid.uuid4().hex[:8]}"
    own_vhost = bool(shutil.which("rabbitmqctl")) and ctl("add_vhost", vhost) == 0
    amqp = args.amqp
    if own_vhost:
        ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        amqp = f"{args.amqp.rstrip('/')}/{vhost}"
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    results = {}
    try:
        for label, url in (("sql", "sql://"), ("rabbitmq", f"{amqp}?prefix={prefix}")):
            results[label] = asyncio.run(
                run_backend(url, args.jobs, args.workers, args.rate, args.seconds)
            )
    finally:
        if own_vhost:
            ctl("delete_vhost", vhost)
    sql = results["sql"]
    print(f"{'backend':<10} {'jobs/s':>9} {'p50 ms':>9} {'p95 ms':>9}")
    for label, r in results.items():
        print(
            f"{label:<10} {r['throughput']:>9.0f} {r['p50']:>9.1f} {r['p95']:>9.1f}"
            f"   ({r['throughput'] / sql['throughput']:.2f}x jobs/s,"
            f" {r['p50'] / sql['p50']:.2f}x p50, {r['p95'] / sql['p95']:.2f}x p95)"
        )
    if not own_vhost:
        print(f"(queues left in the broker: {prefix}*; delete them with rabbitmqctl if wanted)")


def ctl(*args: str) -> int:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, check=False).returncode


if __name__ == "__main__":
    main()
