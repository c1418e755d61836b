"""The home feed under a synthetic social graph: reads, fan-out and freshness (issue 13).

Builds a graph of `--users` accounts with a power-law follower distribution (follower counts
`--max-followers` * rank ** -`--exponent`, so a few accounts have tens of thousands of
followers; one account has exactly `--fanout-followers`) and `--posts` ready posts spread over
30 days (ids time-sortable, growing with created_at), each with one photo and its eight
variants (`--media-fraction` of them), in a SQLite file made by the project's migrations and
filled with sqlite3 executemany. Then, side by side in the same run:

- feed reads through the HTTP API (the real app under uvicorn, one process on core 0, `wrk` on
  core 1): first page ranked, first page latest, a deep page (`--deep-page`) of each, requests
  per second and p50/p99 at peak; p50/p99 at half the peak rate (open loop, paced); against
  (a) the naive fan-out-on-read SQL query on the same file (one core) and (b) a hello-world
  route added to the same app object;
- fan-out: glimpse.feed.jobs.fan_out_post of a new post to the feeds of the account with
  `--fanout-followers` followers, against a hand-written executemany of the same rows;
- freshness: `glimpse serve` (with its workers) on a small fresh data dir; an author uploads a
  small JPEG at `--fresh-rate` per second; the delay from the author seeing `ready` to each
  follower seeing the post in GET /api/v1/feed?order=latest.

    python bench/bench_feed.py                         # full size (100k users, 1M posts)
    python bench/bench_feed.py --users 10000 --posts 100000 --fanout-followers 1000 --seconds 5

Needs `wrk` (apt-get install wrk). `--keep DIR` keeps (and with `--reuse`, reuses) the loaded
data dir; `--parts` chooses what runs. Every server runs on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

from glimpse.accounts.tokens import hash_token, new_token
from glimpse.ids import EPOCH_MS, compose_id, id_timestamp_ms, smallest_id_at

DAY_MS = 86_400_000
_EPOCH_DT = datetime(1970, 1, 1)
TWO_CORES = (os.cpu_count() or 1) > 1
SERVER_CORE, CLIENT_CORE = 0, 1

# ----------------------------------------------------------------------------------------------
# Small helpers


def sql_time(unix_ms: int) -> str:
    """A datetime as SQLAlchemy stores UTCDateTime on SQLite ('YYYY-MM-DD HH:MM:SS.ffffff')."""
    return (_EPOCH_DT + timedelta(milliseconds=unix_ms)).isoformat(" ", "microseconds")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if TWO_CORES else []


def on_client_core() -> None:
    if TWO_CORES:
        os.sched_setaffinity(0, {CLIENT_CORE})


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Clock:
    """Prints how long each step took, and keeps the figures for the summary."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        print(f"  {name} ...", end="", flush=True)
        yield
        took = time.perf_counter() - started
        self.steps[name] = took
        print(f" {took:.1f} s", flush=True)


# ----------------------------------------------------------------------------------------------
# The synthetic graph


@dataclass
class Graph:
    """What the loader made, as far as the measurements need it (saved beside the database)."""

    users: int
    follows: int
    posts: int
    media_posts: int
    user_ids: list[int]
    pull_accounts: list[int]  # follower_count > feed_fanout_max_followers: feed_pull = 1
    top_followers: list[int]  # follower counts of the largest accounts
    fanout_author: int
    fanout_followers: int
    viewers: list[tuple[int, str]]  # (user id, bearer token): feeds materialised, measured warm
    cold_viewers: list[tuple[int, str]]  # feeds never built: their first read rebuilds
    likes: int
    load_seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)
    index_strategy: str = ""
    db_bytes: int = 0

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__))

    @classmethod
    def load(cls, path: Path) -> Graph:
        data = json.loads(path.read_text())
        data["viewers"] = [tuple(v) for v in data["viewers"]]
        data["cold_viewers"] = [tuple(v) for v in data["cold_viewers"]]
        return cls(**data)


VARIANTS = [  # name, content type, width, height, bytes: a 4:5 photo's eight renditions
    ("w1080", "image/jpeg", 1080, 1350, 182_000),
    ("w1080", "image/webp", 1080, 1350, 121_000),
    ("w640", "image/jpeg", 640, 800, 71_000),
    ("w640", "image/webp", 640, 800, 46_000),
    ("w320", "image/jpeg", 320, 400, 21_000),
    ("w320", "image/webp", 320, 400, 14_000),
    ("sq150", "image/jpeg", 150, 150, 6_000),
    ("sq150", "image/webp", 150, 150, 4_000),
]
FILTER_NAMES = ["normal"] * 6 + ["clarendon", "gingham", "juno", "lark"]
WORDS = (
    "sun sea morning coffee city night walk friends dog cat light summer winter rain street "
    "garden market train mountain river bridge old new little long weekend home"
).split()


def follower_targets(n_users: int, max_followers: int, exponent: float, exact: int) -> list[int]:
    """Follower count by popularity rank: max * rank ** -exponent (at least 1), with the rank
    nearest to `exact` set to exactly `exact` (the fan-out account)."""
    targets = [max(1, round(max_followers * r**-exponent)) for r in range(1, n_users + 1)]
    targets = [min(t, n_users - 1) for t in targets]
    nearest = min(range(n_users), key=lambda r: abs(targets[r] - exact))
    targets[nearest] = exact
    return targets


def build_graph(
    db_path: Path,
    *,
    n_users: int,
    n_posts: int,
    max_followers: int,
    exponent: float,
    fanout_followers: int,
    fanout_max: int,
    media_fraction: float,
    n_viewers: int,
    n_cold: int,
    likes_per_viewer: int,
    index_strategy: str,
    seed: int,
    clock: Clock,
) -> Graph:
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)

    with clock.step("generate users and follows"):
        # Users joined over the months before the posts' 30 days; ids grow with that.
        first_ms, last_ms = EPOCH_MS + DAY_MS, now_ms - 31 * DAY_MS
        joined = sorted(rng.randrange(first_ms, last_ms) for _ in range(n_users))
        user_ids = [compose_id(ms - EPOCH_MS, 1, i % 1024) for i, ms in enumerate(joined)]
        # Popularity rank is independent of age.
        by_rank = list(range(n_users))
        rng.shuffle(by_rank)
        targets = follower_targets(n_users, max_followers, exponent, fanout_followers)
        fanout_index = by_rank[targets.index(fanout_followers)]
        followers_of: list[list[int]] = [[] for _ in range(n_users)]
        population = range(n_users)
        for rank, followee in enumerate(by_rank):
            want = targets[rank]
            chosen = rng.sample(population, want + 1)
            followers_of[followee] = [f for f in chosen if f != followee][:want]
        follower_count = [len(f) for f in followers_of]
        following: list[list[int]] = [[] for _ in range(n_users)]
        for followee, followers in enumerate(followers_of):
            for f in followers:
                following[f].append(followee)
        n_follows = sum(follower_count)
        if n_follows >= 1024 * 8192:
            raise SystemExit("too many follows for the id scheme used here")

    with clock.step("generate posts"):
        # Popular accounts post more: weight 1 + sqrt(followers) / 2.
        weights = [1 + math.sqrt(c) / 2 for c in follower_count]
        cum, total = [], 0.0
        for w in weights:
            total += w
            cum.append(total)
        authors = rng.choices(range(n_users), cum_weights=cum, k=n_posts)
        start_ms, end_ms = now_ms - 30 * DAY_MS, now_ms - 120_000
        stamps = sorted(rng.randrange(start_ms, end_ms) for _ in range(n_posts))
        post_ids: list[int] = []
        last, seq = -1, 0
        for ms in stamps:
            seq = seq + 1 if ms == last else 0
            last = ms
            post_ids.append(compose_id(ms - EPOCH_MS, 3, seq))
        post_count = [0] * n_users
        for a in authors:
            post_count[a] += 1

    con = sqlite3.connect(db_path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-1000000")  # 1 GB: random index inserts stay in memory
    con.execute("PRAGMA foreign_keys=OFF")
    con.execute("PRAGMA temp_store=MEMORY")
    dropped: list[str] = []
    if index_strategy == "rebuild":
        # Secondary indexes go and come back after the load (built from sorted runs).
        tables = ("users", "posts", "media", "media_variants", "follows", "likes")
        rows = con.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            f" AND tbl_name IN ({','.join('?' * len(tables))})",
            tables,
        ).fetchall()
        for name, sql in rows:
            con.execute(f'DROP INDEX "{name}"')
            dropped.append(sql)

    def load(table: str, columns: int, rows: Any, chunk: int = 200_000) -> None:
        statement = f"INSERT INTO {table} VALUES ({','.join('?' * columns)})"
        con.execute("BEGIN")
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= chunk:
                con.executemany(statement, batch)
                batch.clear()
        if batch:
            con.executemany(statement, batch)
        con.execute("COMMIT")

    pull = [i for i in range(n_users) if follower_count[i] > fanout_max]
    pull_set = set(pull)
    with clock.step(f"load users ({n_users:,})"):
        load(
            "users",
            11,
            (
                (
                    user_ids[i],
                    f"user{i}",
                    f"User {i}",
                    "",
                    0,
                    "synthetic:not-a-password-hash",
                    post_count[i],
                    follower_count[i],
                    len(following[i]),
                    sql_time(joined[i]),
                    1 if i in pull_set else 0,
                )
                for i in range(n_users)
            ),
        )

    with clock.step(f"load posts ({n_posts:,})"):

        def post_rows() -> Iterator[tuple[Any, ...]]:
            for pid, a, ms in zip(post_ids, authors, stamps, strict=True):
                likes = int(rng.paretovariate(1.3) * (1 + follower_count[a] / 200)) - 1
                caption = " ".join(rng.choices(WORDS, k=rng.randrange(2, 12)))
                yield (
                    pid,
                    user_ids[a],
                    caption,
                    rng.choice(FILTER_NAMES),
                    "ready",
                    None,
                    None,
                    likes,
                    likes // rng.randrange(8, 30),
                    sql_time(ms),
                )

        load("posts", 10, post_rows())

    with_media = [i for i in range(n_posts) if rng.random() < media_fraction]
    with clock.step(f"load media ({len(with_media):,}) and variants ({8 * len(with_media):,})"):

        def media_rows() -> Iterator[tuple[Any, ...]]:
            for i in with_media:
                pid, ms = post_ids[i], stamps[i]
                hour = time.strftime("%Y%m%d%H", time.gmtime(ms / 1000))
                yield (
                    pid,  # a media id of its own; the post's number is free in this table
                    pid,
                    user_ids[authors[i]],
                    0,
                    "image",
                    "ready",
                    f"originals/{hour}/{pid}/{pid}",
                    "image/jpeg",
                    1_900_000,
                    "",
                    1080,
                    1350,
                    "LEHV6nWB2yk8pyo0adR*.7kCMdnj",
                    sql_time(ms),
                )

        def variant_rows() -> Iterator[tuple[Any, ...]]:
            for i in with_media:
                pid = post_ids[i]
                for name, ctype, w, h, size in VARIANTS:
                    digest = hashlib.sha256(f"{pid}/{name}/{ctype}".encode()).hexdigest()
                    ext = "jpg" if ctype == "image/jpeg" else "webp"
                    yield (pid, name, ctype, w, h, f"v/{digest[:2]}/{digest}.{ext}", size)

        load("media", 14, media_rows())
        load("media_variants", 7, variant_rows())

    with clock.step(f"load follows ({n_follows:,})"):

        def follow_rows() -> Iterator[tuple[Any, ...]]:
            n = 0
            for follower in range(n_users):
                for followee in sorted(following[follower]):
                    since = max(joined[follower], joined[followee])
                    ms = rng.randrange(since, now_ms - 60_000)
                    follow_id = compose_id(ms - EPOCH_MS, 8 + (n >> 10), n & 1023)
                    n += 1
                    yield (user_ids[follower], user_ids[followee], follow_id, sql_time(ms))

        load("follows", 4, follow_rows())

    with clock.step("viewers: likes and tokens"):
        candidates = [i for i in range(n_users) if following[i] and i not in pull_set]
        picked = rng.sample(candidates, min(len(candidates), n_viewers + n_cold))
        posts_by_author: dict[int, list[int]] = {}
        for i, a in enumerate(authors):
            posts_by_author.setdefault(a, []).append(i)
        like_rows: set[tuple[int, int]] = set()
        for v in picked[:n_viewers]:
            pool = [p for followee in following[v] for p in posts_by_author.get(followee, [])]
            for p in rng.sample(pool, min(len(pool), likes_per_viewer)):
                like_rows.add((p, v))
        load(
            "likes",
            3,
            sorted(
                (
                    post_ids[p],
                    user_ids[v],
                    sql_time(min(now_ms - 1000, stamps[p] + rng.randrange(1000, DAY_MS))),
                )
                for p, v in like_rows
            ),
        )
        viewers = [(user_ids[v], new_token()) for v in picked]
        expires = sql_time(now_ms + 30 * DAY_MS)
        load(
            "access_tokens",
            6,
            (
                (compose_id(now_ms - EPOCH_MS, 4000 + i // 1024, i % 1024), uid, hash_token(t),
                 sql_time(now_ms), expires, None)
                for i, (uid, t) in enumerate(viewers)
            ),  # fmt: skip
        )

    if dropped:
        with clock.step(f"rebuild {len(dropped)} secondary indexes"):
            for sql in dropped:
                con.execute(sql)
    with clock.step("ANALYZE"):
        con.execute("ANALYZE")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()

    return Graph(
        users=n_users,
        follows=n_follows,
        posts=n_posts,
        media_posts=len(with_media),
        user_ids=user_ids,
        pull_accounts=[user_ids[i] for i in pull],
        top_followers=sorted(follower_count, reverse=True)[:12],
        fanout_author=user_ids[fanout_index],
        fanout_followers=follower_count[fanout_index],
        viewers=viewers[:n_viewers],
        cold_viewers=viewers[n_viewers:],
        likes=len(like_rows),
        index_strategy=index_strategy,
    )


def bench_settings(args: argparse.Namespace, data_dir: Path) -> Any:
    from glimpse.config import Settings

    return Settings(
        data_dir=data_dir, rate_limits="off", feed_fanout_max_followers=args.fanout_max
    )


def prepare(args: argparse.Namespace, data_dir: Path, clock: Clock) -> Graph:
    from glimpse.db.migrate import upgrade_to_head

    settings = bench_settings(args, data_dir)
    db_path = data_dir / "glimpse.db"
    if args.reuse and (data_dir / "graph.json").exists():
        graph = Graph.load(data_dir / "graph.json")
        print(f"reusing {data_dir} (loaded in {graph.load_seconds:.0f} s)")
        return graph
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    started = time.perf_counter()
    with clock.step("migrations (upgrade_to_head)"):
        upgrade_to_head(settings.resolved_database_url)
    graph = build_graph(
        db_path,
        n_users=args.users,
        n_posts=args.posts,
        max_followers=args.max_followers or int(0.6 * args.users),
        exponent=args.exponent,
        fanout_followers=args.fanout_followers or min(10_000, args.users // 10),
        fanout_max=settings.feed_fanout_max_followers,
        media_fraction=args.media_fraction,
        n_viewers=args.viewers,
        n_cold=args.cold_viewers,
        likes_per_viewer=args.likes_per_viewer,
        index_strategy=args.index_strategy,
        seed=args.seed,
        clock=clock,
    )
    graph.load_seconds = time.perf_counter() - started
    graph.steps = dict(clock.steps)
    graph.db_bytes = db_path.stat().st_size
    graph.save(data_dir / "graph.json")
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("the synthetic graph")
    data.add_argument("--users", type=int, default=100_000, help="accounts (default 100,000)")
    data.add_argument("--posts", type=int, default=1_000_000, help="ready posts (default 1,000,000)")
    data.add_argument(
        "--max-followers", type=int, default=0,
        help="followers of the most followed account (default 60%% of --users)",
    )  # fmt: skip
    data.add_argument(
        "--exponent", type=float, default=0.8,
        help="power law: the rank-r account has max-followers * r**-exponent (default 0.8)",
    )  # fmt: skip
    data.add_argument(
        "--fanout-followers", type=int, default=0,
        help="the fan-out account's exact follower count (default 10,000, or users/10)",
    )  # fmt: skip
    data.add_argument(
        "--media-fraction", type=float, default=1.0,
        help="share of posts with a photo and its 8 variant rows (default 1.0)",
    )  # fmt: skip
    data.add_argument("--viewers", type=int, default=1000, help="measured viewers (default 1000)")
    data.add_argument(
        "--cold-viewers", type=int, default=100,
        help="viewers whose feed is never built before their first read (default 100)",
    )  # fmt: skip
    data.add_argument(
        "--likes-per-viewer", type=int, default=30,
        help="likes of followed accounts' posts per measured viewer (affinity, liked_by_me)",
    )  # fmt: skip
    data.add_argument(
        "--index-strategy", choices=["keep", "rebuild"], default="rebuild",
        help="load into the migrated indexes, or drop the secondary ones and rebuild after",
    )  # fmt: skip
    data.add_argument(
        "--fanout-max", type=int, default=10_000,
        help="GLIMPSE_FEED_FANOUT_MAX_FOLLOWERS: accounts past it are merged at read time"
        " (default 10,000, the setting's default)",
    )  # fmt: skip
    data.add_argument("--seed", type=int, default=13)
    data.add_argument(
        "--keep", type=Path, default=None,
        help="load into this folder and keep it (default: a temporary folder, removed)",
    )  # fmt: skip
    data.add_argument("--reuse", action="store_true", help="with --keep: reuse a loaded folder")
    run = parser.add_argument_group("the measurements")
    run.add_argument(
        "--parts", default="naive,read,fanout,freshness",
        help="comma-separated: naive, read, fanout, freshness (default all)",
    )  # fmt: skip
    run.add_argument("--seconds", type=float, default=10, help="each wrk run (default 10)")
    run.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    run.add_argument("--deep-page", type=int, default=10, help="the deep page's number (10)")
    run.add_argument(
        "--deep-viewers", type=int, default=300,
        help="viewers whose walk to the deep page is made first (default 300)",
    )  # fmt: skip
    run.add_argument(
        "--paced-seconds", type=float, default=15,
        help="the open-loop run at half the peak rate (default 15)",
    )  # fmt: skip
    run.add_argument("--fanout-rounds", type=int, default=7, help="fan-out repetitions (7)")
    run.add_argument("--fresh-seconds", type=float, default=60, help="freshness run (60 s)")
    run.add_argument("--fresh-rate", type=float, default=1.0, help="uploads per second (1)")
    run.add_argument("--fresh-followers", type=int, default=3, help="followers polling (3)")
    run.add_argument("--poll-ms", type=float, default=25, help="polling interval (25 ms)")
    run.add_argument(
        "--profile", type=Path, default=None,
        help="py-spy the server during the first-page run; collapsed stacks go here",
    )  # fmt: skip
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    clock = Clock()
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            data_dir = args.keep.resolve()
        else:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "data"
        print(f"data dir {data_dir}")
        graph = prepare(args, data_dir, clock)
        print(
            f"graph: {graph.users:,} users, {graph.follows:,} follows, {graph.posts:,} posts"
            f" ({graph.media_posts:,} with media), {graph.likes:,} likes;"
            f" loaded in {graph.load_seconds:.0f} s, {graph.db_bytes / 2**30:.2f} GiB"
        )
        print(
            f"  largest accounts' followers: {graph.top_followers};"
            f" {len(graph.pull_accounts)} merged at read time (feed_pull)"
        )


if __name__ == "__main__":
    main()
