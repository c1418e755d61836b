"""Servers and workers started by a test are stopped when it ends, whether it passed or not."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import Process, Server, Worker


@pytest.fixture
def started() -> Iterator[list[Process]]:
    processes: list[Process] = []
    yield processes
    for process in reversed(processes):
        process.close()


@pytest.fixture
def start_server(started: list[Process]) -> Callable[..., Server]:
    def start(data_dir: Path, *args: str, **options: Any) -> Server:
        server = Server(data_dir, *args, **options)
        started.append(server)
        return server

    return start


@pytest.fixture
def start_worker(started: list[Process]) -> Callable[..., Worker]:
    def start(data_dir: Path, env: dict[str, str] | None = None) -> Worker:
        worker = Worker(data_dir, env)
        started.append(worker)
        return worker

    return start
