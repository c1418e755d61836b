"""The cost of operations (issue 18) through real `glimpse serve` processes and `wrk`: the feed's
first page, a post read, a media read and /healthz (the cheapest route: the largest share any
route can lose), each against three servers on copies of one data directory, in one run.

- "on": what `glimpse serve` runs by default, with GLIMPSE_LOG_FORMAT=json: a request id, the
  request metrics (prometheus_client's multiprocess files, as serve shares them with its
  workers) and one JSON access line per request, written to a file.
- "off": the same with GLIMPSE_ACCESS_LOG=false, the most an operator can turn off: API.md
  promises `X-Request-ID` on every answer and /metrics has no switch.
- "bare": a bench-only launcher that swaps the request log middleware (request id, metrics,
  access line) for a pass-through and makes the media fast path record nothing: no operator
  can run it, but it is the issue's "off" (no ids, no logging, no metrics) in full.

Each server is pinned to core 0 and wrk to core 1 (bench_origin.py); they run side by side and
are driven one at a time, in an order that rotates each round, as this machine's speed drifts.
Reported: the median requests/s of each side, and the median over rounds of on/off and on/bare.

    python bench/bench_operations_http.py [--posts 30] [--rounds 5] [--seconds 5] [--connections 16]
        [--reference OTHER_CHECKOUT/src]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_origin import on_core, wait_until_up
from bench_upload_latency import free_port, serve_command

BARE_LAUNCHER = textwrap.dedent(
    """
    # `glimpse serve` with no request id, metrics or access line (bench_operations_http.py).
    import glimpse.app
    import glimpse.media.fast_path as fast_path
    from glimpse.cli import app


    class PassThrough:
        def __init__(self, app, **_):
            self.app = app

        async def __call__(self, scope, receive, send):
            await self.app(scope, receive, send)


    glimpse.app.RequestLog = PassThrough
    fast_path.MediaFastPath._record = lambda *_: None
    fast_path.new_request_id = lambda: "-"
    app()
    """
)

SIDES = ("on", "off", "bare")
REFERENCE = "on, reference code"


def jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (seed * 37 % 256, 90, 160)).save(out, "JPEG", quality=85)
    return out.getvalue()


def populate(base: str, posts: int) -> dict[str, Any]:
    """ada posts `posts` photos (public); bob follows her. bob's token, a post, a small variant."""
    with httpx.Client(base_url=base, timeout=60) as client:
        tokens = {}
        for name in ("ada", "bob"):
            body = {"username": name, "password": "correct horse"}
            client.post("/api/v1/accounts", json=body).raise_for_status()
            tokens[name] = {
                "Authorization": "Bearer "
                + client.post("/api/v1/auth/token", json=body).json()["access_token"]
            }
        client.post("/api/v1/users/ada/follow", headers=tokens["bob"]).raise_for_status()
        ids = []
        for i in range(posts):
            answer = client.post(
                "/api/v1/posts",
                headers=tokens["ada"],
                data={"caption": f"photo {i}"},
                files=[("file", (f"p{i}.jpg", jpeg(i), "image/jpeg"))],
            )
            answer.raise_for_status()
            ids.append(answer.json()["id"])
        deadline = time.monotonic() + 300
        while True:
            post = client.get(f"/api/v1/posts/{ids[-1]}", headers=tokens["ada"]).json()
            if post.get("status") == "ready":
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"posts not processed: {post}")
            time.sleep(0.2)
        feed = client.get("/api/v1/feed", headers=tokens["bob"])
        feed.raise_for_status()
        variants = post["media"][0]["variants"]
        smallest = min(variants, key=lambda v: v.get("width") or 10**6)
        return {"token": tokens["bob"]["Authorization"], "post": ids[-1], "media": smallest["url"]}


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, seconds: int, connections: int, headers: dict[str, str]) -> tuple[int, float]:
    """Requests answered and their rate, by wrk on core 1."""
    extra = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "30s",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out or re.search(r"Socket errors: connect [1-9]|read [1-9]|write [1-9]", out):
        raise SystemExit(f"{url}: {out}")
    count = re.search(r"(\d+) requests in", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert count and rate, out
    return int(count.group(1)), float(rate.group(1))


def start(
    side: str, data_dir: Path, work: Path, port: int, reference: Path | None
) -> tuple[subprocess.Popen[bytes], str, Path]:
    env = {
        **os.environ,
        "GLIMPSE_RATE_LIMITS": "off",  # (wrk's rates are far past any budget; the same for all)
        "GLIMPSE_LOG_FORMAT": "json",
        "GLIMPSE_LOG_LEVEL": "INFO",
        "GLIMPSE_ACCESS_LOG": "false" if side == "off" else "true",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if side == REFERENCE:
        assert reference is not None
        env["PYTHONPATH"] = str(reference)
    command = serve_command(port, 1, data_dir)
    command[command.index("--workers") : command.index("--workers") + 2] = ["--no-workers"]
    if side == "bare":
        launcher = work / "bare_serve.py"
        launcher.write_text(BARE_LAUNCHER)
        command[1:3] = [str(launcher)]  # (in place of `-m glimpse.cli`)
    log = work / f"{side.split()[0]}.log"
    with open(log, "ab") as stderr:  # (the server keeps its own copy of the descriptor)
        process = on_core(0, command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    return process, f"http://127.0.0.1:{port}", log


def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="glimpse-ops-http-"))
    source = work / "data"
    ports = iter(range(args.port, args.port + 5)) if args.port else iter(free_port, None)
    sides = (*SIDES, REFERENCE) if args.reference else SIDES
    port = next(ports)
    seeding = subprocess.Popen(
        serve_command(port, 1, source),
        env={**os.environ, "GLIMPSE_RATE_LIMITS": "off", "GLIMPSE_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        try:
            wait_until_up(f"http://127.0.0.1:{port}/readyz")
            made = populate(f"http://127.0.0.1:{port}", args.posts)
        finally:
            seeding.send_signal(signal.SIGTERM)
            seeding.wait(timeout=60)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    routes = {
        "feed, first page": ("/api/v1/feed", {"Authorization": made["token"]}),
        "post read": (f"/api/v1/posts/{made['post']}", {"Authorization": made["token"]}),
        "media read (fast path)": (made["media"], {}),
        "/healthz": ("/healthz", {}),
    }
    if args.routes:
        routes = {name: route for name, route in routes.items() if name.startswith(args.routes)}
    servers: dict[str, tuple[subprocess.Popen[bytes], str, Path]] = {}
    try:
        for n, side in enumerate(sides):
            shutil.copytree(source, work / str(n))
            servers[side] = start(side, work / str(n), work, next(ports), args.reference)
        for _, base, _ in servers.values():
            wait_until_up(f"{base}/readyz")
        print(
            f"{args.posts} posts; {args.rounds} rounds of wrk -c{args.connections} for"
            f" {args.seconds} s per route and side; servers on core 0, wrk on core 1.\n"
            "req/s: wrk's rate; CPU: the server process's CPU time per request (user + system),"
            " the cost that other work on the machine disturbs least.\n"
        )
        print("| route | side | req/s | CPU µs/req | lost vs off (req/s; CPU) | lost vs bare |")
        print("|---|---|---:|---:|---:|---:|", flush=True)
        for route, (path, headers) in routes.items():
            for _, base, _ in servers.values():  # warm-up: caches, the memo, pages
                wrk(base + path, 2, args.connections, headers)
            rates: dict[str, list[float]] = {side: [] for side in sides}
            costs: dict[str, list[float]] = {side: [] for side in sides}
            for round_ in range(args.rounds):
                shift = round_ % len(sides)
                for side in sides[shift:] + sides[:shift]:
                    process, base, _ = servers[side]
                    used = cpu_seconds(process.pid)
                    count, rate = wrk(base + path, args.seconds, args.connections, headers)
                    costs[side].append((cpu_seconds(process.pid) - used) / count * 1e6)
                    rates[side].append(rate)
            report(route, rates, costs)
        lines = {side: len(log.read_bytes().splitlines()) for side, (_, _, log) in servers.items()}
        print(f"log lines written: {lines}")
    finally:
        for process, _, _ in servers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


def lost(on: list[float], other: list[float], *, cost: bool) -> str:
    """The share of throughput "on" loses against `other`: the median over rounds."""
    ratios = [(b / a if cost else a / b) for a, b in zip(on, other, strict=True)]
    return f"{(1 - statistics.median(ratios)) * 100:.1f}%"


def report(route: str, rates: dict[str, list[float]], costs: dict[str, list[float]]) -> None:
    for side in rates:
        cells = [
            route,
            side,
            f"{statistics.median(rates[side]):,.0f}",
            f"{statistics.median(costs[side]):,.0f}",
        ]
        for other in ("off", "bare"):
            if side in (other, "bare"):
                cells.append("")
            else:
                cells.append(
                    f"{lost(rates[side], rates[other], cost=False)};"
                    f" {lost(costs[side], costs[other], cost=True)}"
                )
        print(f"| {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--posts", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--routes", type=lambda text: tuple(text.split(",")), help="e.g. feed,post: only these"
    )
    parser.add_argument("--port", type=int, default=0, help="the first of 5 ports (default: any)")
    parser.add_argument(
        "--reference",
        type=Path,
        help="also run 'on' with the glimpse package from this src/ folder (a copy of an"
        " earlier commit's): before and after in the same run",
    )
    main(parser.parse_args())
