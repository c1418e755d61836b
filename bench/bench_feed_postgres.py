"""Feed first page on PostgreSQL beside the embedded SQLite, same data, same run (issue 17).

For each database: a fresh Glimpse (the real app, in this process, over ASGI), `--authors`
accounts each posting `--posts` small photos through the API (the worker drains in-process), and
a viewer following all of them. Then GET /api/v1/feed (first page, ranked) by `--clients`
concurrent clients for `--seconds`: requests per second, p50 and p99. A second PostgreSQL row
reads through a replica URL equal to the primary (the replica path's cost: the routing and, for
a caller who just wrote, the replay check), when `--replica` is given.

    python bench/bench_feed_postgres.py --postgres postgresql://postgres@127.0.0.1:5432/postgres

The PostgreSQL server must let the user create and drop databases (a `glimpse_bench_*` one).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
from PIL import Image

from glimpse.app import create_app
from glimpse.config import Settings
from glimpse.db.migrate import upgrade_to_head
from glimpse.worker import drain


def _jpeg(n: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), (n % 256, 80, 40)).save(out, "JPEG", quality=80)
    return out.getvalue()


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def measure(label: str, settings: Settings, args: argparse.Namespace) -> dict[str, float]:
    upgrade_to_head(settings.resolved_database_url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://b.test") as client:

            async def signup(name: str) -> dict[str, str]:
                body = {"username": name, "password": "correct horse"}
                await client.post("/api/v1/accounts", json=body)
                token = (await client.post("/api/v1/auth/token", json=body)).json()
                return {"Authorization": f"Bearer {token['access_token']}"}

            viewer = await signup("viewer")
            started = time.perf_counter()
            for a in range(args.authors):
                author = await signup(f"author{a}")
                await client.post(f"/api/v1/users/author{a}/follow", headers=viewer)
                for p in range(args.posts):
                    files = [("file", ("p.jpg", _jpeg(a * 31 + p), "image/jpeg"))]
                    response = await client.post("/api/v1/posts", headers=author, files=files)
                    assert response.status_code == 202, response.text
            await drain(app.state.container)
            load_seconds = time.perf_counter() - started
            first = await client.get("/api/v1/feed", headers=viewer)
            assert first.status_code == 200 and first.json()["items"], first.text

            latencies: list[float] = []
            deadline = time.perf_counter() + args.seconds

            async def reader() -> None:
                while time.perf_counter() < deadline:
                    t = time.perf_counter()
                    response = await client.get("/api/v1/feed", headers=viewer)
                    latencies.append(time.perf_counter() - t)
                    assert response.status_code == 200, response.text

            t0 = time.perf_counter()
            await asyncio.gather(*(reader() for _ in range(args.clients)))
            elapsed = time.perf_counter() - t0
    latencies.sort()
    result = {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "load_s": load_seconds,
    }
    print(
        f"{label:<22} {result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.1f} ms"
        f"  p99 {result['p99_ms']:6.1f} ms  (loading {load_seconds:.0f} s)",
        flush=True,
    )
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--authors", type=int, default=20)
    parser.add_argument("--posts", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--replica", action="store_true")
    args = parser.parse_args()
    common = {
        "secret_key": "bench",
        "rate_limits": "off",
        "media_gc_delay_seconds": 0,
        "feed_viewer_memo_seconds": 0,
    }
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results["sqlite"] = await measure(
            "SQLite (embedded)", Settings(data_dir=root / "sqlite", **common), args
        )
        runs = [("PostgreSQL", "")]
        if args.replica:
            runs.append(("PostgreSQL + replica", "same"))
        for label, replica in runs:
            name = f"glimpse_bench_{uuid.uuid4().hex[:10]}"
            base = args.postgres.rpartition("/")[0]
            await _admin(args.postgres, f'CREATE DATABASE "{name}"')
            url = f"{base}/{name}"
            try:
                settings = Settings(
                    data_dir=root / name,
                    database_url=url,
                    database_replica_urls=url if replica else "",
                    **common,
                )
                results[label] = await measure(label, settings, args)
            finally:
                await _admin(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    base_result = results["sqlite"]
    for label, r in results.items():
        print(
            f"{label:<22} throughput x{r['rps'] / base_result['rps']:.2f}"
            f"  p99 x{r['p99_ms'] / base_result['p99_ms']:.2f} of SQLite"
        )


if __name__ == "__main__":
    asyncio.run(main())
