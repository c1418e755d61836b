"""A worker process for tests/integration/test_rabbitmq_worker.py: runs `glimpse worker`'s loop
over the test's database and broker, with one extra handler that notes when it starts and ends
a run (in `marks`) and sleeps `seconds` in between, so that a test can kill it mid-job.

    python -m tests.integration.rabbit_worker_probe DATA_DIR QUEUE_URL NAME MARKS SECONDS
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from glimpse.config import Settings
from glimpse.container import Container, build_container
from glimpse.jobs import Payload, registry
from glimpse.worker import run_worker


def main() -> None:
    data_dir, queue_url, name, marks, seconds = sys.argv[1:6]

    async def handler(container: Container, payload: Payload) -> None:
        with Path(marks).open("a") as f:
            f.write(f"start {os.getpid()}\n")
        await asyncio.sleep(float(seconds))
        with Path(marks).open("a") as f:
            f.write(f"done {os.getpid()}\n")

    registry.job(name)(handler)
    settings = Settings(
        data_dir=Path(data_dir),
        secret_key="test-secret",
        queue_url=queue_url,
        worker_poll_seconds=0.01,
        job_retry_base_seconds=0,
        job_retry_max_seconds=0,
        job_lease_seconds=60,
    )

    async def run() -> None:
        container = build_container(settings, node_id=os.getpid() % 1000)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await run_worker(container, stop)
        finally:
            await container.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
