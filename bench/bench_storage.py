"""Object storage: the S3 store (against moto_server on this machine) side by side with the local
disk, in the same run, on the same bytes.

    python bench/bench_storage.py [--objects 300] [--concurrency 16] [--requests 600]

(needs the dev extra, for moto_server: pip install -e ".[dev,bench]")

Measures, for each store: put_bytes and get_bytes of 150 KB objects (a w1080 JPEG's size) with
`--concurrency` at once; put_file and fetch_to_file of one 40 MB original (multipart on S3);
and the media origin answering GET of a processed w1080 JPEG through the real app in-process
(httpx's ASGI transport) with the origin's memory cache off, so that every request reads the
store. moto is a Python server keeping objects in memory: it is slower than MinIO or S3 per
request and shares the two cores with the app, so the ratios are an upper bound of the cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import jpeg_bytes
from tests.servers import free_port

from glimpse.app import create_app
from glimpse.backends.storage import Storage, storage_from_url
from glimpse.config import Settings
from glimpse.db.migrate import upgrade_to_head
from glimpse.worker import drain


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")
    port = free_port()
    command = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    process = subprocess.Popen(
        [command, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(endpoint + "/moto-api/", timeout=1)
            return process, endpoint
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("moto_server did not come up")


async def timed(coroutines: list, concurrency: int) -> float:  # type: ignore[type-arg]
    """Seconds to run them all, `concurrency` at a time."""
    slots = asyncio.Semaphore(concurrency)

    async def one(coroutine) -> None:  # type: ignore[no-untyped-def]
        async with slots:
            await coroutine

    start = time.perf_counter()
    await asyncio.gather(*(one(c) for c in coroutines))
    return time.perf_counter() - start


async def store_figures(
    storage: Storage, objects: int, concurrency: int, workdir: Path
) -> dict[str, float]:
    data = os.urandom(150 * 1024)
    keys = [f"v/{i % 256:02x}/bench{i:06d}.jpg" for i in range(objects)]
    put = await timed([storage.put_bytes(k, data, "image/jpeg") for k in keys], concurrency)
    get = await timed([storage.get_bytes(k) for k in keys], concurrency)
    big = os.urandom(40 * 1024 * 1024)
    spooled = storage.staging_dir() / "bench-original"
    spooled.write_bytes(big)
    start = time.perf_counter()
    await storage.put_file("originals/bench/1/1", spooled, "video/mp4")
    put_file = time.perf_counter() - start
    start = time.perf_counter()
    await storage.fetch_to_file("originals/bench/1/1", workdir / "fetched")
    fetch = time.perf_counter() - start
    await storage.delete_many([*keys, "originals/bench/1/1"])
    return {
        "put_bytes 150 KB (objects/s)": objects / put,
        "get_bytes 150 KB (objects/s)": objects / get,
        "put_file 40 MB (MB/s)": 40 / put_file,
        "fetch_to_file 40 MB (MB/s)": 40 / fetch,
    }


async def origin_figure(settings: Settings, requests: int, concurrency: int) -> float:
    """GETs per second of one w1080 JPEG through the app, the origin cache off."""
    upgrade_to_head(settings.resolved_database_url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            await client.post("/api/v1/accounts", json={"username": "ada", "password": "pw pw pw"})
            token = (
                await client.post(
                    "/api/v1/auth/token", json={"username": "ada", "password": "pw pw pw"}
                )
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            posted = await client.post(
                "/api/v1/posts",
                headers=headers,
                files=[("file", ("p.jpg", jpeg_bytes((1600, 1200)), "image/jpeg"))],
            )
            await drain(app.state.container)
            post = (
                await client.get(f"/api/v1/posts/{posted.json()['id']}", headers=headers)
            ).json()
            url = next(
                v["url"]
                for v in post["media"][0]["variants"]
                if (v["name"], v["content_type"]) == ("w1080", "image/jpeg")
            )

            async def get() -> None:
                response = await client.get(url)
                assert response.status_code == 200, response.status_code

            return requests / await timed([get() for _ in range(requests)], concurrency)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=600)
    args = parser.parse_args()
    moto, endpoint = start_moto()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            urls = {
                "local": f"file://{root / 'media'}",
                "s3 (moto)": f"s3://bench?endpoint={endpoint}",
            }
            results: dict[str, dict[str, float]] = {}
            for name, url in urls.items():
                storage = storage_from_url(url, staging_dir=root / f"staging-{name[:2]}")
                await storage.start()
                try:
                    results[name] = await store_figures(
                        storage, args.objects, args.concurrency, root
                    )
                finally:
                    await storage.close()
                for cache, label in ((0, "cache off"), (64 * 2**20, "cache on, default")):
                    settings = Settings(
                        data_dir=root / f"data-{name[:2]}-{cache}",
                        secret_key="bench",
                        rate_limits="off",
                        origin_cache_bytes=cache,
                        origin_cache_ttl_seconds=0 if cache == 0 else 60,
                        storage_url=""
                        if name == "local"
                        else f"s3://origin{cache}?endpoint={endpoint}",
                    )
                    results[name][f"origin GET w1080 JPEG, {label} (req/s)"] = await origin_figure(
                        settings, args.requests, args.concurrency
                    )
    finally:
        moto.terminate()
        moto.wait()
    local, s3 = results["local"], results["s3 (moto)"]
    print("| measure | local disk | S3 (moto) | S3 / local |")
    print("|---|---|---|---|")
    for measure in local:
        print(
            f"| {measure} | {local[measure]:,.0f} | {s3[measure]:,.0f} | {s3[measure] / local[measure]:.2f}x |"
        )


if __name__ == "__main__":
    asyncio.run(main())
