"""Feeds in Redis against feeds in the database, side by side in one run on the same data
(issue 17, item 2).

One SQLite file (made by the project's migrations, filled with sqlite3) holds an account with
`--followers` followers, `--authors` smaller accounts with `--posts-per-author` ready posts
each, and `--viewers` of the followers who also follow `--follows` of the smaller accounts.
Then, for the embedded feed store (tables in that file) and for the Redis one, each in a fresh
app over the same file:

- fan-out: every follower's feed is built, then `--posts` new posts of the large account are
  fanned out by the real job (glimpse.feed.jobs.fan_out_post): feed inserts per second; and
  the store's own part, `push` to every follower at once;
- feed reads: the first page (20, ranked) of the viewers' feeds through the real app in this
  process (httpx over ASGI, one request after another for `--seconds`, so that both stores
  are measured alike: the embedded store's reads never wait on a socket, so "concurrent"
  requests to it would run one by one anyway): pages per second, p50 and p99;
- throttling: one request's `api` budget (a moving-window hit and the window's state), counted
  in memory or in Redis;
- what a post-summary cache could save: the share of a page spent in the one statement that
  reads the posts' rows and counts (feed/repository.feed_posts), which a cache could not skip
  anyway (it is also what checks that each post may still be seen).

    python bench/bench_fanout.py
    python bench/bench_fanout.py --followers 2000 --seconds 2     # quick

Redis at 127.0.0.1:6379 (`--redis`), keys under a prefix of this run's own, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis as sync_redis
from sqlalchemy import text

from glimpse.accounts.tokens import hash_token, new_token
from glimpse.app import create_app
from glimpse.config import Settings
from glimpse.db.migrate import upgrade_to_head
from glimpse.feed import repository
from glimpse.feed.jobs import fan_out_post
from glimpse.feed.service import rebuild_feed
from glimpse.ids import EPOCH_MS, compose_id
from glimpse.throttling import Throttle


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load(db: Path, args: argparse.Namespace) -> tuple[int, list[int], dict[int, str]]:
    """The large account's id, the followers' ids, and a token per viewer."""
    rng = random.Random(17)
    now = datetime.now(UTC)
    stamp = (now - timedelta(days=40)).strftime("%Y-%m-%d %H:%M:%S.%f")
    base_ms = int((now - timedelta(days=40)).timestamp() * 1000) - EPOCH_MS
    users = [compose_id(base_ms, 1, 0) + i for i in range(1 + args.authors + args.followers)]
    large, authors, followers = users[0], users[1 : 1 + args.authors], users[1 + args.authors :]
    viewers = followers[: args.viewers]
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO users (id, username, display_name, bio, is_private, password_hash,"
        " post_count, follower_count, following_count, feed_pull, created_at)"
        " VALUES (?, ?, '', '', 0, 'x', ?, ?, ?, 0, ?)",
        [
            (u, f"user{i}", 0, args.followers if u == large else 0, 0, stamp)
            for i, u in enumerate(users)
        ],
    )
    follows = [(f, large) for f in followers]
    follows += [(v, a) for v in viewers for a in rng.sample(authors, args.follows)]
    con.executemany(
        "INSERT INTO follows (follower_id, followee_id, id, created_at) VALUES (?, ?, ?, ?)",
        [(f, e, compose_id(base_ms, 2, 0) + i, stamp) for i, (f, e) in enumerate(follows)],
    )
    start_ms = int((now - timedelta(days=10)).timestamp() * 1000) - EPOCH_MS
    posts = []
    for n, author in enumerate(a for a in authors for _ in range(args.posts_per_author)):
        ms = start_ms + rng.randrange(10 * 86_400_000)
        created = datetime.fromtimestamp((ms + EPOCH_MS) / 1000, UTC)
        posts.append(
            (
                compose_id(ms, 3, n % 1024),
                author,
                rng.randrange(50),
                created.strftime("%Y-%m-%d %H:%M:%S.%f"),
            )
        )
    con.executemany(
        "INSERT INTO posts (id, author_id, kind, caption, filter_name, status, like_count,"
        " comment_count, created_at) VALUES (?, ?, 'post', '', 'normal', 'ready', ?, 0, ?)",
        posts,
    )
    tokens = {v: new_token() for v in viewers}
    expires = (now + timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S.%f")
    con.executemany(
        "INSERT INTO access_tokens (id, user_id, token_hash, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [
            (compose_id(base_ms, 4, 0) + i, v, hash_token(t), stamp, expires)
            for i, (v, t) in enumerate(tokens.items())
        ],
    )
    con.execute("COMMIT")
    con.close()
    return large, followers, tokens


async def measure(
    settings: Settings, large: int, followers: list[int], tokens: dict[int, str], args: Any
) -> dict[str, float]:
    app = create_app(settings)
    result: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        container = app.state.container
        # Every follower has read their feed (built it): fan-out pushes to all of them.
        started = time.perf_counter()
        for user_id in followers:
            await rebuild_feed(container, user_id)
        result["build_s"] = time.perf_counter() - started
        pushed, spent = 0, 0.0
        for _ in range(args.posts):
            post_id = container.ids.next_id()
            async with container.db.write() as session:
                await session.execute(
                    text(
                        "INSERT INTO posts (id, author_id, kind, caption, filter_name, status,"
                        " like_count, comment_count, created_at) VALUES (:p, :a, 'post', '',"
                        " 'normal', 'ready', 0, 0, :t)"
                    ),
                    {"p": post_id, "a": large, "t": datetime.now(UTC).replace(tzinfo=None)},
                )
            started = time.perf_counter()
            await fan_out_post(container, {"post_id": post_id})
            spent += time.perf_counter() - started
            pushed += len(followers) + 1
        result["fanout_per_s"] = pushed / spent
        result["fanout_ms_per_post"] = spent / args.posts * 1000
        # The store's part alone (the job also reads the followers from the database, in
        # batches): one push of a made-up post to every follower at once.
        started = time.perf_counter()
        for _ in range(args.posts):
            await container.feed_store.push(container.ids.next_id(), large, followers)
        result["push_per_s"] = len(followers) * args.posts / (time.perf_counter() - started)

        viewers = list(tokens)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench"
        ) as client:

            async def page(viewer: int) -> float:
                started = time.perf_counter()
                response = await client.get(
                    "/api/v1/feed?limit=20",
                    headers={"Authorization": f"Bearer {tokens[viewer]}"},
                )
                assert response.status_code == 200, response.text
                assert len(response.json()["items"]) == 20
                return time.perf_counter() - started

            for viewer in viewers:  # warm: each feed read once
                await page(viewer)
            latencies: list[float] = []
            deadline = time.perf_counter() + args.seconds
            rng = random.Random(1)

            async def reader() -> None:
                while time.perf_counter() < deadline:
                    latencies.append(await page(rng.choice(viewers)))

            started = time.perf_counter()
            await asyncio.gather(*(reader() for _ in range(args.concurrency)))
            elapsed = time.perf_counter() - started
        result["pages_per_s"] = len(latencies) / elapsed
        result["p50_ms"] = statistics.median(latencies) * 1000
        result["p99_ms"] = percentile(latencies, 0.99) * 1000

        # The statement a post-summary cache would stand in for, alone, on the same pages.
        window = await container.feed_store.window(viewers[0], None, 20)
        ids = [p for p, _ in window.entries] if window is not None else []
        started, n = time.perf_counter(), 0
        while time.perf_counter() - started < 1.0:
            await repository.feed_posts(container.db, viewers[0], ids)
            n += 1
        result["feed_posts_ms"] = (time.perf_counter() - started) / n * 1000

        # What throttling costs a request (the `api` budget: a hit and its window's state),
        # counted in this process's memory, or in Redis through the container's client.
        budgets = "api=1000000/minute"
        if container.redis is None:
            throttle = Throttle(budgets, "async+memory://")
        else:
            throttle = Throttle.in_redis(budgets, container.redis, f"{uuid.uuid4().hex[:8]}:")
        started, n = time.perf_counter(), 0
        while time.perf_counter() - started < 1.0:
            await throttle.hit("api", "address", f"10.0.0.{n % 120}")
            n += 1
        result["throttle_ms"] = (time.perf_counter() - started) / n * 1000
        await throttle.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--followers", type=int, default=10_000)
    parser.add_argument("--authors", type=int, default=200)
    parser.add_argument("--posts-per-author", type=int, default=30)
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--follows", type=int, default=30)
    parser.add_argument("--posts", type=int, default=5, help="posts fanned out per store")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    stores = {"embedded (SQLite tables)": "", "Redis": f"{args.redis}?prefix={prefix}"}
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "data"
        data.mkdir()
        base = Settings(data_dir=data, secret_key="bench", rate_limits="off")
        upgrade_to_head(base.resolved_database_url)
        large, followers, tokens = load(Path(base.resolved_database_url.split("///")[1]), args)
        try:
            for name, url in stores.items():
                settings = base.model_copy(update={"cache_url": url})
                results[name] = asyncio.run(measure(settings, large, followers, tokens, args))
                print(name, {k: round(v, 2) for k, v in results[name].items()}, flush=True)
        finally:
            client = sync_redis.Redis.from_url(args.redis)
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
    sql, red = results["embedded (SQLite tables)"], results["Redis"]
    print(
        f"\n{args.followers:,} followers, {args.viewers} viewers following {args.follows} of"
        f" {args.authors} accounts ({args.posts_per_author} posts each); one process, one core\n"
    )
    print("| measure | embedded | Redis | Redis / embedded |\n|---|---|---|---|")
    rows = [
        ("fan-out, feed inserts/s", "fanout_per_s", "{:,.0f}"),
        ("fan-out, ms per post", "fanout_ms_per_post", "{:.1f}"),
        ("the store's push alone, feed inserts/s", "push_per_s", "{:,.0f}"),
        ("feed first page, pages/s", "pages_per_s", "{:,.0f}"),
        ("feed first page, p50 ms", "p50_ms", "{:.2f}"),
        ("feed first page, p99 ms", "p99_ms", "{:.2f}"),
        ("building every follower's feed, s", "build_s", "{:.1f}"),
        ("feed_posts (rows + counts of 20 posts), ms", "feed_posts_ms", "{:.3f}"),
        ("a request's `api` budget (hit + window), ms", "throttle_ms", "{:.3f}"),
    ]
    for label, key, fmt in rows:
        print(
            f"| {label} | {fmt.format(sql[key])} | {fmt.format(red[key])} |"
            f" {red[key] / sql[key]:.2f} |"
        )


if __name__ == "__main__":
    main()
