"""The cost of operations (issue 18): feed and post reads with request ids, the JSON access log
and metrics on, against the same app with them off, side by side in one run.

"Off" is the same app object with the RequestLog middleware (request id, metrics, the access
line) swapped for a pass-through and logging quiet; "on" is what `glimpse serve` runs with
GLIMPSE_LOG_FORMAT=json, each access line written to a file. Both are driven in this process
through raw ASGI calls (no sockets, no HTTP client), so that nothing but the app's own work is
timed: the share lost here is an upper bound of what a deployment loses, where parsing HTTP and
the network add the same cost to both. Rounds alternate on/off and the ratio of each pair is
reported (the median of the pairs), as this machine's speed drifts.

    python bench/bench_operations.py [--posts 30] [--rounds 7] [--seconds 1.5] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from PIL import Image

import glimpse.app
from glimpse.config import Settings
from glimpse.db.migrate import upgrade_to_head
from glimpse.ops.logs import setup_logging
from glimpse.worker import drain

Headers = list[tuple[bytes, bytes]]


class PassThrough:
    """RequestLog's place in the stack, doing nothing (the "off" side)."""

    def __init__(self, app: Any, **_: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


async def call(app: Any, method: str, path: str, headers: Headers, body: bytes = b"") -> Any:
    """One request through the ASGI app; returns (status, body)."""
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"glimpse.test"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("glimpse.test", 80),
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def multipart(fields: dict[str, str], files: list[tuple[str, bytes]]) -> tuple[bytes, bytes]:
    boundary = "benchboundary"
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for filename, data in files:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
            "\r\nContent-Type: image/jpeg\r\n\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}".encode()


def jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (seed * 37 % 256, 90, 160)).save(out, "JPEG", quality=85)
    return out.getvalue()


@asynccontextmanager
async def running(settings: Settings, operations: bool) -> AsyncIterator[Any]:
    original = glimpse.app.RequestLog
    if not operations:
        glimpse.app.RequestLog = PassThrough  # type: ignore[misc,assignment]
    try:
        app = glimpse.app.create_app(settings)
    finally:
        glimpse.app.RequestLog = original  # type: ignore[misc]
    async with app.router.lifespan_context(app):
        yield app


async def json_call(app: Any, method: str, path: str, headers: Headers, body: Any = None) -> Any:
    import json

    payload = json.dumps(body).encode() if body is not None else b""
    extra = [(b"content-type", b"application/json")] if body is not None else []
    status, answer = await call(app, method, path, [*headers, *extra], payload)
    assert status < 300, (path, status, answer[:300])
    return json.loads(answer) if answer else None


async def populate(app: Any, posts: int) -> tuple[Headers, list[str]]:
    """ada posts `posts` photos; bob follows her. Returns bob's auth header and the post ids."""
    tokens = {}
    for name in ("ada", "bob"):
        await json_call(
            app, "POST", "/api/v1/accounts", [], {"username": name, "password": "correct horse"}
        )
        answer = await json_call(
            app, "POST", "/api/v1/auth/token", [], {"username": name, "password": "correct horse"}
        )
        tokens[name] = [(b"authorization", f"Bearer {answer['access_token']}".encode())]
    await json_call(app, "POST", "/api/v1/users/ada/follow", tokens["bob"])
    ids = []
    for i in range(posts):
        body, kind = multipart({"caption": f"photo {i}"}, [(f"p{i}.jpg", jpeg(i))])
        status, answer = await call(
            app, "POST", "/api/v1/posts", [*tokens["ada"], (b"content-type", kind)], body
        )
        assert status == 202, answer[:300]
        import json

        ids.append(json.loads(answer)["id"])
    await drain(app.state.container)
    return tokens["bob"], ids


async def measure(
    app: Any, paths: list[str], headers: Headers, seconds: float, concurrency: int
) -> float:
    """Requests per second over `seconds`, `concurrency` at a time, cycling through `paths`."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < deadline:
            status, _ = await call(app, "GET", paths[i % len(paths)], headers)
            assert status == 200, status
            done += 1
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return done / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="glimpse-ops-bench-"))
    settings = Settings(
        data_dir=work / "data",
        secret_key="bench",
        rate_limits="off",
        feed_viewer_memo_seconds=0,
        log_format="json",
        access_log=True,
    )
    upgrade_to_head(settings.resolved_database_url)
    # "On": one JSON line per request, written to a file as a deployment's log would be.
    setup_logging("json")
    log_file = work / "access.log"
    [handler] = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(log_file, "a"))  # noqa: SIM115  (open for the whole run)
    async with running(settings, operations=True) as app:
        headers, ids = await populate(app, args.posts)
    routes = {
        "feed (ranked first page)": ["/api/v1/feed"],
        "post read": [f"/api/v1/posts/{post_id}" for post_id in ids],
    }
    print(
        f"{args.posts} posts; {args.rounds} rounds of {args.seconds}s each side, "
        f"{args.concurrency} concurrent; access lines to {log_file}"
    )
    for route, paths in routes.items():
        ratios, ons, offs = [], [], []
        for round_ in range(args.rounds):
            results = {}
            # Which side goes first alternates too: the second finds the database's pages warm.
            for operations in (True, False) if round_ % 2 == 0 else (False, True):
                async with running(settings, operations=operations) as app:
                    logging.getLogger().setLevel(logging.INFO if operations else logging.WARNING)
                    # A warm-up: each side starts with a new app, its caches empty.
                    await measure(app, paths, headers, args.seconds / 3, args.concurrency)
                    results[operations] = await measure(
                        app, paths, headers, args.seconds, args.concurrency
                    )
            on, off = results[True], results[False]
            ratios.append(on / off)
            ons.append(on)
            offs.append(off)
        print(
            f"{route}: on {statistics.median(ons):.0f} req/s, off {statistics.median(offs):.0f}"
            f" req/s; on/off median {statistics.median(ratios):.3f}"
            f" (pairs {min(ratios):.3f}..{max(ratios):.3f}); lost"
            f" {(1 - statistics.median(ratios)) * 100:.1f}%"
        )
    lines = len(log_file.read_bytes().splitlines())
    print(f"access log: {lines} lines written")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--posts", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=8)
    asyncio.run(main(parser.parse_args()))
