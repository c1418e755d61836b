"""Feed first page on PostgreSQL beside the embedded SQLite, same data, same run (issue 17).

For each database: a fresh Glimpse (the real app, in this process, over ASGI), `--authors`
accounts each posting `--posts` small photos through the API (the worker drains in-process), and
a viewer following all of them. Then GET /api/v1/feed (first page, ranked) by `--clients`
concurrent clients for `--seconds`: requests per second, p50 and p99. A second PostgreSQL row
reads through a replica URL equal to the primary (the replica path's cost: the routing and, for
a caller who just wrote, the replay check), when `--replica` is given.

    python bench/bench_feed_postgres.py --postgres postgresql://postgres@127.0.0.1:5432/postgres

`--summaries` measures the post-summary cache instead (backends/summaries), on PostgreSQL with
feeds and summaries in Redis (`--redis`), one data set, the modes taking turns for `--rounds`
rounds of `--seconds` each, so that the machine's load falls on all alike:
- `memory`: this process's memory holds every summary (one API process, warm);
- `redis`: memory holds none (as in each of many API processes, or one just started), each page
  asks Redis once (MGET);
- `none`: memory holds none and Redis is not asked: each page builds its media from PostgreSQL.

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
            started = time.perf_counter()
            viewer = await _load(client, args)
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


async def _load(client: httpx.AsyncClient, args: argparse.Namespace) -> dict[str, str]:
    async def signup(name: str) -> dict[str, str]:
        body = {"username": name, "password": "correct horse"}
        await client.post("/api/v1/accounts", json=body)
        token = (await client.post("/api/v1/auth/token", json=body)).json()
        return {"Authorization": f"Bearer {token['access_token']}"}

    viewer = await signup("viewer")
    for a in range(args.authors):
        author = await signup(f"author{a}")
        await client.post(f"/api/v1/users/author{a}/follow", headers=viewer)
        for p in range(args.posts):
            files = [("file", ("p.jpg", _jpeg(a * 31 + p), "image/jpeg"))]
            response = await client.post("/api/v1/posts", headers=author, files=files)
            assert response.status_code == 202, response.text
    return viewer


async def measure_summaries(settings: Settings, args: argparse.Namespace) -> None:
    """The feed's first page with summaries in memory, in Redis only, and nowhere."""
    from glimpse.backends.summaries import MemorySummaryCache, summary_cache_from_url
    from glimpse.backends.summaries.redis import RedisSummaryCache

    upgrade_to_head(settings.resolved_database_url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        container = app.state.container
        in_redis = container.post_summaries
        assert isinstance(in_redis, RedisSummaryCache)
        warm = in_redis.first_level
        modes = {
            "memory": in_redis,
            "redis": summary_cache_from_url(
                settings.cache_url,
                expect_avif=False,
                ttl_seconds=3600,
                local_posts=0,
                redis=container.redis,
            ),
            "none": MemorySummaryCache(0),
        }
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://b.test") as client:
            viewer = await _load(client, args)
            await drain(container)
            first = await client.get("/api/v1/feed", headers=viewer)
            items = first.json()["items"]
            assert first.status_code == 200 and items, first.text
            statements = {}
            fetch = container.db.fetch
            for mode, cache in modes.items():
                container.post_summaries = cache
                calls = [0]

                async def counted(*a: object, _calls: list[int] = calls, **k: object) -> object:
                    _calls[0] += 1
                    return await fetch(*a, **k)

                container.db.fetch = counted
                await client.get("/api/v1/feed", headers=viewer)
                container.db.fetch = fetch
                statements[mode] = calls[0]
            latencies: dict[str, list[float]] = {mode: [] for mode in modes}
            spent: dict[str, float] = dict.fromkeys(modes, 0.0)
            for _ in range(args.rounds):
                for mode, cache in modes.items():
                    container.post_summaries = cache
                    deadline = time.perf_counter() + args.seconds

                    async def reader(into: list[float], until: float) -> None:
                        while time.perf_counter() < until:
                            t = time.perf_counter()
                            response = await client.get("/api/v1/feed", headers=viewer)
                            into.append(time.perf_counter() - t)
                            assert response.status_code == 200, response.text

                    t0 = time.perf_counter()
                    await asyncio.gather(
                        *(reader(latencies[mode], deadline) for _ in range(args.clients))
                    )
                    spent[mode] += time.perf_counter() - t0
        assert len(warm.entries._entries) >= len(items)
    print(f"{len(items)} posts a page, one photo each; {args.rounds} rounds of {args.seconds} s")
    rates = {mode: len(latencies[mode]) / spent[mode] for mode in modes}
    for mode in modes:
        ordered = sorted(latencies[mode])
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000
        print(
            f"summaries {mode:<7} {rates[mode]:7.0f} req/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
            f"  {statements[mode]} statements a page  x{rates[mode] / rates['none']:.2f} of none",
            flush=True,
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--authors", type=int, default=20)
    parser.add_argument("--posts", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--replica", action="store_true")
    parser.add_argument("--summaries", action="store_true")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    common = {
        "secret_key": "bench",
        "rate_limits": "off",
        "media_gc_delay_seconds": 0,
        "feed_viewer_memo_seconds": 0,
    }
    if args.summaries:
        await _summaries(args, common)
        return
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


async def _summaries(args: argparse.Namespace, common: dict[str, object]) -> None:
    name = f"glimpse_bench_{uuid.uuid4().hex[:10]}"
    await _admin(args.postgres, f'CREATE DATABASE "{name}"')
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(
                data_dir=Path(tmp),
                database_url=f"{args.postgres.rpartition('/')[0]}/{name}",
                cache_url=f"{args.redis}?prefix={prefix}",
                avif_enabled=False,
                **common,  # type: ignore[arg-type]
            )
            await measure_summaries(settings, args)
    finally:
        await _admin(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        import redis

        client = redis.Redis.from_url(args.redis)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


if __name__ == "__main__":
    asyncio.run(main())
