"""Leaving the proxy's rotation on SIGTERM (api/draining.py): the first SIGTERM only turns /readyz
503 for the drain time, a second one stops at once; a request the shutdown grace cuts off before
its answer began is refused with 503 and Retry-After, never a 500."""

from __future__ import annotations

import asyncio
import signal
import time
from types import SimpleNamespace
from typing import Any

import uvicorn

from glimpse.api.draining import DrainingServer, RefuseWhenCutOff, is_draining


async def _nothing(scope: Any, receive: Any, send: Any) -> None:  # (never called)
    raise AssertionError


def _server(drain_seconds: float) -> tuple[DrainingServer, SimpleNamespace]:
    state = SimpleNamespace()
    return DrainingServer(uvicorn.Config(_nothing), state, drain_seconds), state


def _wait_for_exit(server: DrainingServer) -> None:
    deadline = time.monotonic() + 30
    while not server.should_exit and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_sigterm_drains_first_and_the_server_stops_after_the_drain() -> None:
    server, state = _server(drain_seconds=0.2)
    server.handle_exit(signal.SIGTERM, None)
    assert is_draining(state)  # /readyz is 503 from now on
    assert not server.should_exit  # still serving while the proxy takes it out
    _wait_for_exit(server)
    assert server.should_exit


def test_a_second_sigterm_stops_at_once() -> None:
    server, state = _server(drain_seconds=3600)
    server.handle_exit(signal.SIGTERM, None)
    assert is_draining(state) and not server.should_exit
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit


def test_sigint_or_no_drain_time_stops_at_once() -> None:
    server, state = _server(drain_seconds=3600)
    server.handle_exit(signal.SIGINT, None)
    assert server.should_exit and not is_draining(state)
    server, state = _server(drain_seconds=0)
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit and not is_draining(state)


async def _cut_off(app: Any) -> list[dict[str, Any]]:
    """Run one request through `app` and cancel it, as uvicorn does when the grace runs out."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)  # a slow upload's body
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/v1/posts", "headers": []}
    task = asyncio.create_task(RefuseWhenCutOff(app)(scope, receive, send))
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        sent.append({"type": "cancelled"})
    return sent


async def test_a_request_cut_off_by_the_grace_is_refused_with_503_and_retry_after() -> None:
    cleaned: list[str] = []

    async def slow_upload(scope: Any, receive: Any, send: Any) -> None:
        try:
            await receive()
        finally:
            cleaned.append("spool removed")

    sent = await _cut_off(slow_upload)
    assert cleaned == ["spool removed"]  # the request's own clean-up ran first
    start = sent[0]
    assert start["type"] == "http.response.start" and start["status"] == 503
    assert (b"retry-after", b"5") in [(k.lower(), v) for k, v in start["headers"]]
    assert {"type": "cancelled"} not in sent  # the cancellation ends with that answer


async def test_a_request_cut_off_after_its_answer_began_is_cancelled_as_it_was() -> None:
    async def streaming(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()

    sent = await _cut_off(streaming)
    assert [m["type"] for m in sent] == ["http.response.start", "cancelled"]
    assert sent[0]["status"] == 200
