"""Servers and workers started by a test are stopped when it ends, whether it passed or not;
the web tests' server (one per module, with a worker) and Debian's Chromium."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.browser import CHROMIUM, CHROMIUM_ARGS
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


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """`glimpse serve` with one worker, for the tests of one module (the web tests)."""
    server = Server(
        tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]),
        env={"GLIMPSE_WORKERS": "1"},
    )
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
