"""Likes through the API, one at a time and many at once, with this process's SQLite writers
taking turns (db/write_turns.py) and, as the reference in the same run, left to SQLite's busy
handler as before. Also a like's latency while feed reads keep the server a third busy, and while
they saturate it.

    python bench/bench_likes.py                      # loads a small graph first (5,000 users)
    python bench/bench_likes.py --keep /tmp/feedbig  # or on bench_feed.py's data

The server runs as bench_feed.py runs it (one uvicorn process on core 0, the client on core 1).
Each like is followed, a round later, by its unlike: every request commits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_feed as bf


async def likes(
    base: str, targets: list[tuple[str, str]], n: int, at_once: int, seconds: float = 1e9
) -> dict[str, Any]:
    """`n` likes (and unlikes), `at_once` at a time; no new one past `seconds`."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sent_so_far = 0
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:

        async def sender() -> None:  # `at_once` of these, each a like after the other
            nonlocal sent_so_far
            while sent_so_far < n and time.perf_counter() < started + seconds:
                i, sent_so_far = sent_so_far, sent_so_far + 1
                token, post = targets[i % len(targets)]
                method = "POST" if (i // len(targets)) % 2 == 0 else "DELETE"
                sent = time.perf_counter()
                r = await client.request(
                    method,
                    f"/api/v1/posts/{post}/like",
                    headers={"Authorization": f"Bearer {token}"},
                )
                latencies.append(time.perf_counter() - sent)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(at_once)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rate": len(latencies) / elapsed,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "max": latencies[-1] * 1000,
        "failed": {s: c for s, c in statuses.items() if s != 204},
    }


def measure(data: Path, graph: bf.Graph, work: Path, turns: str, n: int) -> dict[str, Any]:
    server = bf.AppServer(data, 10_000, True, work, write_turns=turns)
    out: dict[str, Any] = {}
    try:
        targets = bf.liked_posts(server.base, graph.viewers[-200:])
        first = [f"/api/v1/feed?limit=20\t{t}" for _, t in graph.viewers]
        # Warm: imports, caches, every viewer's feed and kept page (one at a time: a cold
        # feed is rebuilt by its first read, which wrk's timeouts would count as errors).
        with httpx.Client(base_url=server.base, timeout=60) as client:
            for _, token in graph.viewers:
                client.get("/api/v1/feed?limit=20", headers={"Authorization": f"Bearer {token}"})
        bf.on_client_core()
        for at_once in (1, 8, 32):
            out[f"alone, {at_once} at once"] = asyncio.run(likes(server.base, targets, n, at_once))
        peak = bf.run_wrk(server, first, 5, 16, work).rate
        for share, label in ((0.3, "reads at 30% of the peak"), (None, "reads saturating (wrk)")):
            for at_once in (1, 8):
                # Reads for 12 s; likes from the 2nd second, none begun past the 10th.
                if share is None:
                    reads = threading.Thread(target=bf.run_wrk, args=(server, first, 12, 16, work))
                else:
                    reads = threading.Thread(
                        target=bf.run_paced, args=(server, first, peak * share, 12)
                    )
                reads.start()
                time.sleep(1.0)
                out[f"{label}, {at_once} at once"] = asyncio.run(
                    likes(server.base, targets, 100_000, at_once, seconds=9.0)
                )
                reads.join()
    finally:
        server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="a data dir of bench_feed.py")
    parser.add_argument("--likes", type=int, default=400, help="likes per measurement alone")
    parser.add_argument("--rounds", type=int, default=2, help="before/after pairs, alternated")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.keep or Path(tmp) / "data"
        if not (data / "graph.json").exists():
            subprocess.run(
                [sys.executable, str(Path(__file__).with_name("bench_feed.py")), "--keep",
                 str(data), "--users", "5000", "--posts", "50000", "--viewers", "300",
                 "--cold-viewers", "10", "--parts", "naive", "--seconds", "1"],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        graph = bf.Graph.load(data / "graph.json")
        work = Path(tmp) / "work"
        work.mkdir()
        print(f"Code: {bf.tree_state()}. Load average {os.getloadavg()[0]:.2f}.")
        runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for _ in range(args.rounds):
            for turns in ("off", "on"):
                runs[turns].append(measure(data, graph, work, turns, args.likes))
        print("\n| likes | busy handler (before): likes/s, p50, p99, max ms | turns: likes/s, p50,"
              " p99, max ms | p99 before / after |")  # fmt: skip
        print("|---|---|---|---:|")
        for name in runs["on"][0]:
            cells = []
            for turns in ("off", "on"):
                for r in runs[turns]:
                    m = r[name]
                    failed = f", not 204: {m['failed']}" if m["failed"] else ""
                    cells.append(
                        f"{m['rate']:.0f}/s, {m['p50']:.1f}, {m['p99']:.1f}, {m['max']:.0f}{failed}"
                    )
            half = len(cells) // 2
            ratios = [
                runs["off"][i][name]["p99"] / runs["on"][i][name]["p99"] for i in range(args.rounds)
            ]
            print(
                f"| {name} | {'; '.join(cells[:half])} | {'; '.join(cells[half:])} |"
                f" {', '.join(f'{x:.1f}x' for x in ratios)} |"
            )


if __name__ == "__main__":
    main()
