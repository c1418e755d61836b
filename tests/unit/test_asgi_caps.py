"""The body cap and the connection cap as plain ASGI apps: exact at their limits, and a place
in the cap is given back when a request ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from glimpse.api.body_limit import BodyLimit, json_body_deadline
from glimpse.api.connections import ConnectionCap
from glimpse.config import Settings


async def _call(app: Any, path: str, method: str = "POST", length: int | None = None) -> list[dict]:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _reads_body(scope: Any, receive: Any, send: Any) -> None:
    """An app that reads its body to the end (or to a disconnect), then answers 200."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            break
    await _ok(scope, receive, send)


# the declared-length cap is exact: cap passes, cap + 1 is 413.
async def test_body_limit_boundary_is_exact() -> None:
    app = BodyLimit(_ok, max_bytes=2048)
    assert (await _call(app, "/api/v1/auth/token", length=2048))[0]["status"] == 200
    assert (await _call(app, "/api/v1/auth/token", length=2049))[0]["status"] == 413


# operations routes are never refused by the connection cap.
async def test_readyz_passes_a_full_connection_cap() -> None:
    cap = ConnectionCap(_ok, limit=0)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await _call(cap, path, method="GET"))[0]["status"] == 200, path
    assert (await _call(cap, "/api/v1/filters", method="GET"))[0]["status"] == 503


# the cap, fast.
async def test_connection_cap_refuses_past_its_limit_and_frees_its_places() -> None:
    release = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await _ok(scope, receive, send)

    cap = ConnectionCap(slow, limit=2)
    held = [asyncio.create_task(_call(cap, "/api/v1/filters", method="GET")) for _ in range(2)]
    await asyncio.sleep(0.01)
    refused = await asyncio.wait_for(_call(cap, "/api/v1/filters", method="GET"), 2)
    start = refused[0]
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    assert start["status"] == 503
    assert int(headers["retry-after"]) >= 1
    assert headers["connection"] == "close"
    release.set()
    assert [(await asyncio.wait_for(t, 2))[0]["status"] for t in held] == [200, 200]
    assert cap.active == 0
    assert (await _call(cap, "/api/v1/filters", method="GET"))[0]["status"] == 200


# a capped body that stops arriving is answered 400 upload_stalled, not waited for forever.
async def test_body_limit_answers_a_stalled_body() -> None:
    app = BodyLimit(_reads_body, max_bytes=2048, idle_timeout=0.05)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/signin",
        "headers": [(b"content-length", b"1000")],
    }
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": b"username=a", "more_body": True}]

    async def receive() -> dict:
        if chunks:
            return chunks.pop()
        await asyncio.sleep(3600)  # the client sends nothing more
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 5)
    assert sent[0]["status"] == 400 and b"upload_stalled" in sent[1]["body"]
    assert (b"connection", b"close") in [(k.lower(), v) for k, v in sent[0]["headers"]]
    assert len([m for m in sent if m["type"] == "http.response.start"]) == 1


# a capped body trickled in, never idle long enough to stall, is answered 400 upload_too_slow
# once its deadline passes (an attack held every connection slot with a byte every 40 s).
async def test_body_limit_answers_a_trickled_body_at_its_deadline() -> None:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/posts/1/comments",
        "headers": [(b"content-length", b"1000")],
    }

    async def run(deadline: float, gap: float, chunks: int) -> list[dict]:
        app = BodyLimit(_reads_body, max_bytes=2048, idle_timeout=0.5, deadline=deadline)
        sent: list[dict] = []
        left = [b"x"] * chunks

        async def receive() -> dict:
            await asyncio.sleep(gap)  # (a byte at a time, each well within the idle timeout)
            body = left.pop()
            return {"type": "http.request", "body": body, "more_body": bool(left)}

        async def send(message: dict) -> None:
            sent.append(message)

        await asyncio.wait_for(app(scope, receive, send), 10)
        return sent

    sent = await run(deadline=0.3, gap=0.05, chunks=1000)
    assert sent[0]["status"] == 400 and b"upload_too_slow" in sent[1]["body"]
    sent = await run(deadline=5.0, gap=0.01, chunks=5)  # (whole in time: answered as usual)
    assert sent[0]["status"] == 200


def test_a_json_body_s_deadline_follows_the_uploads_minimum_rate() -> None:
    settings = Settings(secret_key="k" * 32)
    assert json_body_deadline(settings) == pytest.approx(10 + 64 * 1024 / (10 * 1024))
    slow = settings.model_copy(update={"upload_min_rate_bytes_per_second": 0})
    assert json_body_deadline(slow) == settings.upload_deadline_seconds
