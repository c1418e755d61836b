"""A data export of an account with 1,000 photos: time and peak memory, beside a plain zipfile.

Run from the repository root: `python bench/bench_export.py [--photos 1000] [--size 1080x1350]`.

An account is bulk-loaded into a fresh embedded Glimpse (SQLite, local store): each photo a
synthetic JPEG stored through the store's own `put_bytes` under the key an upload gives its
original, with its post and media rows as processing leaves them (ready). Then, each in a fresh
child process so that their memory is their own:

- `glimpse`: the export job itself (`privacy.jobs.build_export`): reads the rows in batches,
  writes the zip to a staging file, streams it into the store, marks the export ready;
- `plain zipfile`: the reference, `zipfile.ZipFile.write` of the same original files into one
  zip (no database, no JSON, no store).

Each reports its wall time, the peak of Python's heap during the work (tracemalloc), how far the
child's resident set grew during the work (sampled every 5 ms) and its high-water mark
(ru_maxrss), beside an idle child with the same imports. The zip is
tens of megabytes: a peak far below that says it was never held whole in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import resource
import sys
import tempfile
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import psutil
from PIL import Image

from glimpse.config import Settings
from glimpse.container import build_container
from glimpse.db.base import utcnow
from glimpse.db.migrate import upgrade_to_head
from glimpse.posts import service as posts_service
from glimpse.posts.models import Media, Post, PostStatus
from glimpse.privacy import export as export_service
from glimpse.privacy.jobs import build_export
from glimpse.privacy.models import AccountExport


def settings_for(folder: Path) -> Settings:
    return Settings(data_dir=folder, secret_key="bench", rate_limits="off")


def synthetic_jpeg(index: int, size: tuple[int, int]) -> bytes:
    # A gradient with the index in it: every photo has bytes of its own, and compresses as a
    # photo does rather than as a flat colour.
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image.paste((index * 37 % 256, index * 91 % 256, index * 13 % 256), (0, 0, 64, 64))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


async def load_account(
    folder: Path, photos: int, size: tuple[int, int], username: str = "bench"
) -> dict[str, Any]:
    settings = settings_for(folder)
    upgrade_to_head(settings.resolved_database_url)
    container = build_container(settings, node_id=1)
    await container.start()
    try:
        from glimpse.accounts import service as accounts

        user = await accounts.sign_up(
            container, username=username, password="bench bench", display_name=None
        )
        originals: list[str] = []
        total = 0
        batch: list[tuple[int, int, str, int]] = []
        for i in range(photos):
            data = synthetic_jpeg(i, size)
            post_id, media_id = container.ids.next_id(), container.ids.next_id()
            key = posts_service.original_key(post_id, media_id)
            await container.storage.put_bytes(key, data, "image/jpeg")
            originals.append(str(container.storage.local_path(key)))
            total += len(data)
            batch.append((post_id, media_id, key, len(data)))
            if len(batch) == 200 or i == photos - 1:
                async with container.db.write() as session:
                    now = utcnow()
                    for n, (p, _m, _k, _b) in enumerate(batch):
                        session.add(
                            Post(
                                id=p, author_id=user.id, caption=f"photo {i - len(batch) + n + 1}",
                                filter_name="normal", status=PostStatus.READY, like_count=0,
                                comment_count=0, created_at=now,
                            )
                        )  # fmt: skip
                    await session.flush()
                    for p, m, k, b in batch:
                        session.add(
                            Media(
                                id=m, post_id=p, author_id=user.id, position=0, kind="image",
                                status=PostStatus.READY, original_key=k, original_type="image/jpeg",
                                original_bytes=b, alt_text="a gradient", width=size[0],
                                height=size[1], created_at=now,
                            )
                        )  # fmt: skip
                batch = []
        return {"user_id": user.id, "originals": originals, "bytes": total}
    finally:
        await container.close()


def _measure(kind: str, folder: str, payload: dict[str, Any], out: Any) -> None:
    """In a fresh child: do one kind of work and report time and memory."""
    if kind == "glimpse":
        # A worker is a long-lived process: its first container and first export pay for
        # connections and lazy imports once (about 65 MB of resident memory here), which is
        # not the export's cost. A 5-photo export of another account warms it up first.
        asyncio.run(_export(Path(folder), payload["warmup_user_id"]))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    process = psutil.Process()
    rss_before = process.memory_info().rss
    peak = [rss_before]
    sampling = threading.Event()

    def sample() -> None:
        # ru_maxrss is the process's high-water mark, set by the imports already: the work's own
        # growth shows in the current RSS, sampled every few milliseconds.
        while not sampling.wait(0.005):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    started = time.perf_counter()
    size = 0
    if kind == "idle":
        pass
    elif kind == "plain zipfile":
        target = Path(folder) / "plain.zip"
        with zipfile.ZipFile(target, "w") as archive:
            for n, path in enumerate(payload["originals"]):
                archive.write(path, f"posts/{n}.jpg", compress_type=zipfile.ZIP_STORED)
        size = target.stat().st_size
    else:
        size = asyncio.run(_export(Path(folder), payload["user_id"]))
    elapsed = time.perf_counter() - started
    _, heap_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    sampling.set()
    sampler.join()
    out.put(
        {
            "kind": kind,
            "seconds": elapsed,
            "heap_peak": heap_peak,
            "rss_start_kb": baseline,
            "rss_peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "zip_bytes": size,
            "rss_growth": peak[0] - rss_before,
        }
    )


async def _export(folder: Path, user_id: int) -> int:
    container = build_container(settings_for(folder), node_id=2)
    await container.start()
    try:
        export_id = container.ids.next_id()
        async with container.db.write() as session:
            session.add(AccountExport(id=export_id, user_id=user_id, status="pending"))
        await build_export(container, {"export_id": export_id})
        async with container.db.read() as session:
            done = await session.get(AccountExport, export_id)
        assert done is not None and done.status == "ready", done
        assert done.key == export_service.export_key(user_id, export_id)
        with zipfile.ZipFile(container.storage.local_path(done.key) or "") as archive:
            posts = json.loads(archive.read("posts.json"))
        assert len(posts) == len({p["id"] for p in posts})
        return int(done.size_bytes or 0)
    finally:
        await container.close()


def run(kind: str, folder: Path, payload: dict[str, Any]) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(target=_measure, args=(kind, str(folder), payload, out))
    child.start()
    result: dict[str, Any] = out.get(timeout=3600)
    child.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--size", default="1080x1350", help="each photo's pixels, WxH")
    parser.add_argument("--rounds", type=int, default=2, help="each kind, interleaved")
    args = parser.parse_args()
    size = tuple(int(n) for n in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        payload = asyncio.run(load_account(folder, args.photos, (size[0], size[1])))
        warmup = asyncio.run(load_account(folder, 5, (size[0], size[1]), "warmup"))
        payload["warmup_user_id"] = warmup["user_id"]
        print(
            f"loaded {args.photos} photos of {size[0]}x{size[1]}, "
            f"{payload['bytes'] / 2**20:.1f} MB, in {time.perf_counter() - started:.1f} s"
        )
        results = [run("idle", folder, payload)]
        for _ in range(args.rounds):
            for kind in ("glimpse", "plain zipfile"):
                results.append(run(kind, folder, payload))
    print(
        f"{'kind':<14} {'time s':>7} {'zip MB':>7} {'heap peak MB':>13} {'RSS growth MB':>14}"
        f" {'ru_maxrss MB':>13}"
    )
    for r in results:
        print(
            f"{r['kind']:<14} {r['seconds']:7.2f} {r['zip_bytes'] / 2**20:7.1f} "
            f"{r['heap_peak'] / 2**20:13.2f} {r['rss_growth'] / 2**20:14.1f}"
            f" {r['rss_peak_kb'] / 1024:13.1f}"
        )
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
