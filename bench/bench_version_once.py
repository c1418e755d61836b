"""A kept first page of the home feed, in process (no HTTP): the database's version
(Database.version) read once by the route and handed to the token's, the large accounts' and the
kept page's looks, against each of them reading it again (as before), alternating in one run.

    python bench/bench_version_once.py --keep /tmp/feedbig   # on bench_feed.py's data

Each round reads the first page of 300 viewers, every page already kept; the figures are the
time per page (median and fastest of the rounds of each way).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_feed as bf


async def measure(data_dir: Path, rounds: int, viewers_measured: int) -> dict[str, list[float]]:
    from glimpse.accounts.service import authenticate_id
    from glimpse.container import build_container
    from glimpse.feed.routes import _feed_page

    graph = bf.Graph.load(data_dir / "graph.json")
    settings = bf.bench_settings(argparse.Namespace(fanout_max=10_000), data_dir)
    container = build_container(settings, node_id=8104)
    await container.start()
    viewers = graph.viewers[:viewers_measured]

    async def read_by_each(token: str) -> None:
        viewer = await authenticate_id(container.db, token, container.token_memo)
        await _feed_page(container, viewer, 20, None, "ranked")

    async def read_once(token: str) -> None:
        version = container.db.version()
        viewer = await authenticate_id(container.db, token, container.token_memo, version)
        await _feed_page(container, viewer, 20, None, "ranked", version=version)

    ways: dict[str, Callable[[str], Awaitable[None]]] = {
        "read by each look": read_by_each,
        "read once": read_once,
    }
    try:
        for _, token in viewers:  # every page built and kept
            await read_by_each(token)
        times: dict[str, list[float]] = {name: [] for name in ways}
        for r in range(rounds):
            order = list(ways) if r % 2 == 0 else list(reversed(ways))  # drift hits both alike
            for name in order:
                started = time.perf_counter()
                for _, token in viewers:
                    await ways[name](token)
                times[name].append((time.perf_counter() - started) / len(viewers) * 1e6)
    finally:
        await container.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, required=True, help="bench_feed.py's data folder")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--viewers", type=int, default=300)
    args = parser.parse_args()
    times = asyncio.run(measure(args.keep, args.rounds, args.viewers))
    reference = statistics.median(times["read by each look"])
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:18} median {median:6.2f} us a page, fastest {min(values):6.2f} us"
            f" ({median / reference:.2f}x the reference)"
        )


if __name__ == "__main__":
    main()
