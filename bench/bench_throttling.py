"""The cost of throttling: read and upload throughput with GLIMPSE_RATE_LIMITS on vs `off`.

Two `glimpse serve --no-workers` on free ports, alike but for the setting: one with the default
budgets (`--budgets never-trip` for budgets of 10^9 instead), one with `off`. The requests come
from `--accounts` accounts in turn, each signed up from an address of its own (through a trusted
proxy hop), so that the default budgets never trip: what is measured is their bookkeeping (a
moving-window hit per request, the RateLimit-* headers, the upload budget). Budgets of 10^9
keep every request of the run in one window, whose list the `limits` memory storage walks: they
cost more than any real budget. Each round measures both,
alternating which goes first in short slices, so that the machine's drift hits both alike; the
medians of each side, and the median of the per-pair ratios (the robust figure), are printed.

- reads: GET /api/v1/me with a bearer token (token lookup, usage query), `--connections` at once;
- uploads: POST /api/v1/posts of a small JPEG (about 2 KB, no workers: processing is not timed).

    python bench/bench_throttling.py [--rounds 15] [--seconds 2] [--connections 8]

Servers are pinned to core 0 and this client to core 1 where there are two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from PIL import Image

NEVER_TRIPS = ";".join(
    f"{name}=1000000000/5minute" for name in ("api", "upload", "signin_failures", "signup")
)
DEFAULT_BUDGETS = "api=300/5minute;upload=30/30minute;signin_failures=5/minute;signup=100/hour"
PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, rate_limits: str, accounts: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        pin = ["taskset", "-c", "0"] if (os.cpu_count() or 1) > 1 else []
        command = [*pin, sys.executable, "-m", "glimpse.cli", "serve", "--no-workers"]
        command += ["--port", str(self.port), "--data-dir", str(data_dir)]
        self.process = subprocess.Popen(
            command,
            env={
                **os.environ,
                "GLIMPSE_RATE_LIMITS": rate_limits,
                "GLIMPSE_TRUSTED_PROXY_HOPS": "1",
                "GLIMPSE_LOG_LEVEL": "WARNING",
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._wait_until_ready()
            self.tokens: list[dict[str, str]] = []
            with httpx.Client(base_url=self.base, timeout=30) as client:
                for i in range(accounts):
                    # Each account from an address of its own, as real users are.
                    via = {"X-Forwarded-For": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"}
                    body = {"username": f"bench{i}", "password": PASSWORD}
                    client.post("/api/v1/accounts", json=body, headers=via).raise_for_status()
                    response = client.post("/api/v1/auth/token", json=body, headers=via)
                    response.raise_for_status()
                    token = {"Authorization": f"Bearer {response.json()['access_token']}"}
                    # Its first authenticated answer makes the token known: from then on it
                    # has a budget of its own.
                    client.get("/api/v1/me", headers={**token, **via}).raise_for_status()
                    self.tokens.append(token)
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self) -> None:
        for _ in range(300):
            if self.process.poll() is not None:
                raise SystemExit("glimpse serve exited during start-up")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit("glimpse serve did not become ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def small_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (96, 72), (200, 80, 40)).save(out, "JPEG", quality=85)
    return out.getvalue()


def cpu_seconds(server: Server) -> float:
    times = psutil.Process(server.process.pid).cpu_times()
    return float(times.user + times.system)


async def throughput(
    server: Server, kind: str, seconds: float, connections: int
) -> tuple[float, float]:
    """Requests answered per second by `connections` clients looping for `seconds`, and the
    server's CPU time per request (less disturbed than the rate by whatever else runs)."""
    photo = small_jpeg()
    done = 0
    turn = itertools.count()
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=server.base, timeout=60, limits=limits) as client:

        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                headers = server.tokens[next(turn) % len(server.tokens)]
                if kind == "reads":
                    response = await client.get("/api/v1/me", headers=headers)
                    expected = 200
                else:
                    response = await client.post(
                        "/api/v1/posts",
                        headers=headers,
                        files=[("file", ("p.jpg", photo, "image/jpeg"))],
                    )
                    expected = 202
                if response.status_code != expected:
                    raise SystemExit(f"{kind}: {response.status_code} {response.text[:200]}")
                done += 1

        started, cpu = time.perf_counter(), cpu_seconds(server)
        await asyncio.gather(*(loop() for _ in range(connections)))
        return done / (time.perf_counter() - started), (cpu_seconds(server) - cpu) / done


async def bookkeeping_cost(hits: int = 20_000) -> float:
    """Seconds per Throttle.hit (the window entry and its RateLimit-* numbers), in-process:
    the part of the difference that does not drown in the machine's noise."""
    from glimpse.throttling import Throttle

    throttle = Throttle(NEVER_TRIPS)
    started = time.perf_counter()
    for i in range(hits):
        await throttle.hit("api", "token", str(i % 100))
    elapsed = time.perf_counter() - started
    await throttle.close()
    return elapsed / hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--accounts", type=int, default=120)
    parser.add_argument("--budgets", choices=["default", "never-trip"], default="default")
    parser.add_argument("--kinds", default="reads,uploads", help="reads, uploads or both")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        servers: dict[str, Server] = {}
        try:
            budgets = DEFAULT_BUDGETS if args.budgets == "default" else NEVER_TRIPS
            servers["on"] = Server(Path(tmp) / "on", budgets, args.accounts)
            servers["off"] = Server(Path(tmp) / "off", "off", args.accounts)
            rates: dict[tuple[str, str], list[float]] = {}
            cpu: dict[tuple[str, str], list[float]] = {}
            for kind in kinds:
                # Warm up both (imports, caches, the first SQLite pages).
                for server in servers.values():
                    asyncio.run(throughput(server, kind, 1.0, args.connections))
                for round_ in range(args.rounds):
                    # Short slices, alternating which goes first: the machine's drift (other
                    # processes come and go) hits both alike, and each pair gives one ratio.
                    order = ["on", "off"] if round_ % 2 == 0 else ["off", "on"]
                    for mode in order:
                        rate, cpu_per_request = asyncio.run(
                            throughput(servers[mode], kind, args.seconds, args.connections)
                        )
                        rates.setdefault((kind, mode), []).append(rate)
                        cpu.setdefault((kind, mode), []).append(cpu_per_request)
                    on, off = rates[(kind, "on")][-1], rates[(kind, "off")][-1]
                    on_cpu, off_cpu = cpu[(kind, "on")][-1], cpu[(kind, "off")][-1]
                    print(
                        f"  {kind:7} pair {round_ + 1:2}: on {on:7.1f}/s {on_cpu * 1000:6.2f} ms CPU"
                        f"  off {off:7.1f}/s {off_cpu * 1000:6.2f} ms CPU  on/off {on / off:.3f}"
                    )
        finally:
            for server in servers.values():
                server.stop()
    per_hit = asyncio.run(bookkeeping_cost())
    print()
    print(f"bookkeeping per counted request (in-process): {per_hit * 1e6:.1f} us")
    print(f"({args.rounds} pairs of {args.seconds:g} s; medians)")
    print(f"{'':8} {'on':>10} {'off':>10} {'on/off':>7} {'pairs':>7}   server CPU per request")
    for kind in kinds:
        on_rates, off_rates = rates[(kind, "on")], rates[(kind, "off")]
        pair = statistics.median(a / b for a, b in zip(on_rates, off_rates, strict=True))
        on, off = statistics.median(on_rates), statistics.median(off_rates)
        on_cpu, off_cpu = (
            statistics.median(cpu[(kind, "on")]),
            statistics.median(cpu[(kind, "off")]),
        )
        print(
            f"{kind:8} {on:8.1f}/s {off:8.1f}/s {on / off:7.3f} {pair:7.3f}"
            f"   {on_cpu * 1000:.2f} ms vs {off_cpu * 1000:.2f} ms: {on_cpu / off_cpu - 1:+.1%}"
        )


if __name__ == "__main__":
    main()
