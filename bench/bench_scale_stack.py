"""The scale stack against the embedded default, side by side in one run on the same data
(issue 17): real `glimpse` processes, as README's "Running at scale" starts them.

- embedded: `glimpse serve --workers N` (SQLite, the media folder, the jobs table, feed tables);
- scale: two `glimpse serve --no-workers` and N `glimpse worker` processes over PostgreSQL,
  Redis, RabbitMQ and S3 (moto_server on this machine: a Python S3 server sharing the cores,
  so the storage side is slower than MinIO or AWS would be).

For each, on a fresh data set (`--followers` accounts follow one author):
- upload-to-ready: the author uploads a small JPEG every 1/`--rate` s for `--seconds`; the time
  from the 202 to the post reading `ready`, p50 and p95;
- feed reads: `--clients` concurrent clients read the first page of followers' feeds (ranked)
  for `--seconds`: requests per second, p50 and p99.

    python bench/bench_scale_stack.py [--rate 2] [--seconds 20] [--followers 50] [--clients 8]

Needs PostgreSQL (postgresql://postgres@127.0.0.1:5432), Redis, RabbitMQ (guest) on this machine
and moto_server (the dev extra). Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from PIL import Image

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1200, 900), (seed * 41 % 256, 120, 60)).save(out, "JPEG", quality=88)
    return out.getvalue()


class Processes:
    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        handle = open(log, "ab")  # noqa: SIM115  (the process keeps it)
        process = subprocess.Popen(
            [sys.executable, "-m", "glimpse.cli", *args],
            env={**os.environ, **env},
            stdout=handle,
            stderr=handle,
            start_new_session=True,
        )
        self.started.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.started.clear()


def wait_ready(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{base} did not become ready")


@contextmanager
def moto() -> Iterator[str]:
    port = free_port()
    command = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    process = subprocess.Popen(
        [command, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until = time.monotonic() + 30
        while time.monotonic() < wait_until:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


def postgres_database() -> str:
    import asyncpg

    name = f"glimpse_bench_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        connection = await asyncpg.connect(PG_ADMIN)
        await connection.execute(f'CREATE DATABASE "{name}"')
        await connection.close()

    asyncio.run(create())
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]

    async def drop() -> None:
        connection = await asyncpg.connect(PG_ADMIN)
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()

    asyncio.run(drop())


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def sign_up(client: httpx.Client, name: str) -> dict[str, str]:
    body = {"username": name, "password": "correct horse"}
    client.post("/api/v1/accounts", json=body).raise_for_status()
    token = client.post("/api/v1/auth/token", json=body).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def upload_to_ready(
    bases: list[str], author: dict[str, str], rate: float, seconds: float
) -> list[float]:
    """Uploads at `rate` a second, each timed from its 202 to reading `ready`."""
    pending: dict[str, float] = {}
    done: list[float] = []
    clients = [httpx.Client(base_url=b, timeout=30) for b in bases]
    start = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - start < seconds or pending:
            now = time.monotonic()
            if now - start < seconds and sent <= (now - start) * rate:
                client = clients[sent % len(clients)]
                files = [("file", (f"p{sent}.jpg", jpeg(sent), "image/jpeg"))]
                response = client.post("/api/v1/posts", headers=author, files=files)
                response.raise_for_status()
                pending[response.json()["id"]] = time.monotonic()
                sent += 1
            for post_id, since in list(pending.items()):
                client = clients[hash(post_id) % len(clients)]
                status = client.get(f"/api/v1/posts/{post_id}", headers=author).json()["status"]
                if status == "ready":
                    done.append(time.monotonic() - since)
                    del pending[post_id]
                elif status == "failed":
                    raise SystemExit(f"post {post_id} failed")
            if time.monotonic() - start > seconds + 300:
                raise SystemExit(f"{len(pending)} posts never became ready")
            time.sleep(0.05)
    finally:
        for client in clients:
            client.close()
    return done


async def feed_reads(
    bases: list[str], readers: list[dict[str, str]], clients: int, seconds: float
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def one(k: int) -> None:
        async with httpx.AsyncClient(base_url=bases[k % len(bases)], timeout=30) as client:
            i = k
            while time.monotonic() < deadline:
                began = time.perf_counter()
                response = await client.get("/api/v1/feed", headers=readers[i % len(readers)])
                response.raise_for_status()
                latencies.append(time.perf_counter() - began)
                i += clients

    started = time.monotonic()
    await asyncio.gather(*(one(k) for k in range(clients)))
    return len(latencies) / (time.monotonic() - started), latencies


def run(name: str, bases: list[str], args: argparse.Namespace) -> dict[str, float]:
    with httpx.Client(base_url=bases[0], timeout=30) as client:
        author = sign_up(client, "author")
        readers = [sign_up(client, f"reader{i}") for i in range(args.followers)]
        for reader in readers:
            client.post("/api/v1/users/author/follow", headers=reader).raise_for_status()
    ready = upload_to_ready(bases, author, args.rate, args.seconds)
    rate, latencies = asyncio.run(feed_reads(bases, readers, args.clients, args.seconds))
    figures = {
        "ready_p50_s": statistics.median(ready),
        "ready_p95_s": percentile(ready, 0.95),
        "uploads": float(len(ready)),
        "feed_rps": rate,
        "feed_p50_ms": statistics.median(latencies) * 1000,
        "feed_p99_ms": percentile(latencies, 0.99) * 1000,
    }
    print(name, {k: round(v, 3) for k, v in figures.items()}, flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--followers", type=int, default=50)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="glimpse-scale-bench-"))
    processes = Processes()
    common = {
        "GLIMPSE_RATE_LIMITS": "off",
        "GLIMPSE_SECRET_KEY": "bench",
        "GLIMPSE_LOG_LEVEL": "WARNING",
    }
    results: dict[str, dict[str, float]] = {}
    try:
        port = free_port()
        processes.start(
            [
                "serve",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--data-dir",
                str(work / "embedded"),
            ],
            common,
            work / "embedded.log",
        )
        wait_ready(f"http://127.0.0.1:{port}")
        results["embedded"] = run("embedded", [f"http://127.0.0.1:{port}"], args)
        processes.stop()

        database = postgres_database()
        try:
            with moto() as endpoint:
                prefix = f"bench{uuid.uuid4().hex[:8]}"
                env = {
                    **common,
                    "GLIMPSE_DATABASE_URL": database,
                    "GLIMPSE_CACHE_URL": f"redis://127.0.0.1:6379/12?prefix={prefix}:",
                    "GLIMPSE_QUEUE_URL": f"amqp://guest:guest@127.0.0.1:5672/?prefix={prefix}.",
                    "GLIMPSE_STORAGE_URL": f"s3://{prefix}?endpoint={endpoint}",
                    "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "bench",
                    "AWS_DEFAULT_REGION": "us-east-1",
                }
                subprocess.run(
                    [sys.executable, "-m", "glimpse.cli", "migrate", "--data-dir", str(work / "m")],
                    env={**os.environ, **env},
                    check=True,
                    capture_output=True,
                )
                bases = []
                for i in range(2):
                    api_port = free_port()
                    processes.start(
                        [
                            "serve",
                            "--no-workers",
                            "--port",
                            str(api_port),
                            "--data-dir",
                            str(work / f"api{i}"),
                        ],
                        env,
                        work / f"api{i}.log",
                    )
                    bases.append(f"http://127.0.0.1:{api_port}")
                for i in range(args.workers):
                    processes.start(
                        ["worker", "--data-dir", str(work / f"worker{i}")],
                        env,
                        work / f"worker{i}.log",
                    )
                for base in bases:
                    wait_ready(base)
                results["scale"] = run("scale", bases, args)
                processes.stop()
        finally:
            drop_database(database)
    finally:
        processes.stop()
    embedded, scale = results["embedded"], results["scale"]
    print("\nscale / embedded:")
    for key in ("ready_p50_s", "ready_p95_s", "feed_rps", "feed_p50_ms", "feed_p99_ms"):
        print(
            f"  {key}: {embedded[key]:.3f} -> {scale[key]:.3f} ({scale[key] / embedded[key]:.2f}x)"
        )
    print(f"logs in {work}")


if __name__ == "__main__":
    main()
