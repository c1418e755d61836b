"""The fault-injection suite's stacks, its outside client and its tally.

Each test runs real `glimpse serve` and `glimpse worker` processes, on the embedded default
(one data folder: SQLite, the local store, the jobs table) or on the scale stack (PostgreSQL,
Redis, RabbitMQ and an S3 server, every one real), injects one fault many times, and then counts
what a client of the API sees. The counts are printed at the end of the run (the table that
RELIABILITY.md copies); a count of lost, duplicated or stuck things other than 0 fails the test.

How many times each fault is injected is a setting (`GLIMPSE_FAULTS_<NAME>`, see `times`), small
by default so that the suite fits CI's budget; RELIABILITY.md gives the larger runs' commands.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from PIL import Image

from tests.broker import Broker
from tests.databases import PostgresDatabases, run_sync
from tests.s3server import S3Server, bucket_keys
from tests.servers import Server, Worker

PASSWORD = "correct horse"
# Leases short enough that work a kill interrupts comes back within the test (a restarted
# worker also gives back a dead local worker's jobs at once).
FAST_LEASES = {"GLIMPSE_JOB_LEASE_SECONDS": "2", "GLIMPSE_WORKER_POLL_SECONDS": "0.05"}


def times(name: str, default: int) -> int:
    """How many times to inject a fault: GLIMPSE_FAULTS_<NAME>, else `default`."""
    return int(os.environ.get(f"GLIMPSE_FAULTS_{name.upper()}", default))


# -- the tally ------------------------------------------------------------------------------


@dataclass
class Tally:
    fault: str
    stack: str
    injected: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


TALLIES: list[Tally] = []


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Tally:
    stack = getattr(request.node, "callspec", None)
    name = stack.params.get("stack", "") if stack is not None else ""
    entry = Tally(request.node.originalname.removeprefix("test_"), str(name))
    TALLIES.append(entry)
    return entry


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLIES:
        return
    terminalreporter.section("faults injected, and what a client saw")
    for entry in TALLIES:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(entry.counts.items()))
        terminalreporter.write_line(
            f"{entry.fault} [{entry.stack or '-'}]: injected {entry.injected}; {counts}"
        )


# -- photos ---------------------------------------------------------------------------------


def photo(seed: int, size: tuple[int, int] = (1600, 1200)) -> bytes:
    """A JPEG of noise: slow enough to decode and encode (a few hundred ms) that a kill lands
    inside the job, and every one different, so that no two posts share a variant."""
    rng = random.Random(seed)
    small = Image.frombytes("RGB", (64, 48), rng.randbytes(64 * 48 * 3))
    out = io.BytesIO()
    small.resize(size, Image.Resampling.BICUBIC).save(out, "JPEG", quality=92)
    return out.getvalue()


# -- stacks ---------------------------------------------------------------------------------


@dataclass
class Stack:
    """Where the processes of one test keep their state, and how the test reads it."""

    name: str  # "embedded" or "scale"
    root: Path
    env: dict[str, str]
    database_url: str | None = None  # PostgreSQL's, on the scale stack
    storage_url: str | None = None  # the bucket's, on the scale stack

    @property
    def api_dir(self) -> Path:
        return self.root / "data"

    def worker_dir(self, n: int) -> Path:
        # The embedded default's workers share the API's folder (its database and store).
        return self.api_dir if self.name == "embedded" else self.root / f"worker{n}"

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Rows of a read-only query, written with $1, $2... placeholders."""
        if self.database_url is None:
            with sqlite3.connect(self.api_dir / "glimpse.db", timeout=30) as db:
                query = sql
                for n in range(len(args), 0, -1):
                    query = query.replace(f"${n}", "?")
                return [tuple(r) for r in db.execute(query, args).fetchall()]

        async def fetch() -> list[tuple[Any, ...]]:
            connection = await asyncpg.connect(self.database_url, timeout=10)
            try:
                return [tuple(r) for r in await connection.fetch(sql, *args)]
            finally:
                await connection.close()

        return run_sync(fetch())

    def scalar(self, sql: str, *args: object) -> Any:
        return self.rows(sql, *args)[0][0]

    def stored_keys(self) -> set[str]:
        """Every object in the media store (the /readyz probe's and spooled uploads excepted)."""
        if self.storage_url is not None:
            return set(bucket_keys(self.storage_url))
        root = self.api_dir / "media"
        return {
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and not {".staging", "readyz"} & set(p.parts)
        }

    def staged_files(self) -> list[Path]:
        """Spooled uploads and half-written files in the API's staging folder (the local
        store's, or the one where uploads to a remote store are spooled)."""
        folders = (self.api_dir / "media" / ".staging", self.api_dir / "staging")
        return [p for folder in folders for p in folder.rglob("*") if p.is_file()]

    def recorded_keys(self) -> set[str]:
        originals = self.rows("SELECT original_key FROM media")
        variants = self.rows("SELECT key FROM media_variants")
        return {r[0] for r in originals} | {r[0] for r in variants}

    def server(self, *args: str, env: dict[str, str] | None = None, **options: Any) -> Server:
        return Server(
            self.api_dir, "--no-workers", *args, env={**self.env, **(env or {})}, **options
        )

    def worker(self, n: int = 0, env: dict[str, str] | None = None) -> Worker:
        return Worker(self.worker_dir(n), {**self.env, **(env or {})})


def scale_env(
    database_url: str, redis_url: str, queue_url: str, storage_url: str
) -> dict[str, str]:
    return {
        "GLIMPSE_DATABASE_URL": database_url,
        "GLIMPSE_CACHE_URL": redis_url,
        "GLIMPSE_QUEUE_URL": queue_url,
        "GLIMPSE_STORAGE_URL": storage_url,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "GLIMPSE_SECRET_KEY": "faults-suite-secret",
    }


@pytest.fixture
def embedded_stack(tmp_path: Path) -> Stack:
    return Stack("embedded", tmp_path, dict(FAST_LEASES))


@pytest.fixture
def scale_stack(
    tmp_path: Path,
    postgres_databases: PostgresDatabases,
    redis_url: str,
    broker: Broker,
    s3_server: S3Server,
) -> Iterator[Stack]:
    database = postgres_databases.fresh()
    storage = s3_server.storage_url()
    env = {**scale_env(database, redis_url, broker.url(), storage), **FAST_LEASES}
    yield Stack("scale", tmp_path, env, database_url=database, storage_url=storage)
    postgres_databases.drop(database)


@pytest.fixture(params=["embedded", "scale"])
def stack(request: pytest.FixtureRequest) -> Stack:
    return request.getfixturevalue(f"{request.param}_stack")  # type: ignore[no-any-return]


@pytest.fixture
def processes() -> Iterator[list[Server | Worker]]:
    """Processes a test started; each is gone when the test is, whatever happened."""
    started: list[Server | Worker] = []
    yield started
    for process in reversed(started):
        process.close()


# -- the outside client ---------------------------------------------------------------------


def sign_up(client: httpx.Client, username: str) -> dict[str, str]:
    body = {"username": username, "password": PASSWORD}
    response = client.post("/api/v1/accounts", json=body)
    assert response.status_code == 201, response.text
    token = client.post("/api/v1/auth/token", json=body).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def post_photo(client: httpx.Client, headers: dict[str, str], seed: int) -> httpx.Response:
    return client.post(
        "/api/v1/posts", headers=headers, files=[("file", (f"{seed}.jpg", photo(seed)))]
    )


def wait_for(
    condition: Callable[[], bool], what: Callable[[], object], seconds: float = 120
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.1)


def walk(client: httpx.Client, path: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every item of a paged list, page by page as a client walks it."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        response = client.get(path, headers=headers, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


IMAGE_VARIANTS = {
    (name, kind) for name in ("w1080", "w640", "w320", "sq150") for kind in ("jpeg", "webp")
}


def settled_posts(
    client: httpx.Client, author: dict[str, str], post_ids: list[str], seconds: float = 180
) -> dict[str, dict[str, Any]]:
    """Each post as its author sees it once none is `processing` any more."""
    posts: dict[str, dict[str, Any]] = {}

    def settled() -> bool:
        for post_id in post_ids:
            if posts.get(post_id, {}).get("status") in ("ready", "failed", "gone"):
                continue
            response = client.get(f"/api/v1/posts/{post_id}", headers=author)
            posts[post_id] = response.json() if response.status_code == 200 else {"status": "gone"}
        return all(p["status"] != "processing" for p in posts.values())

    wait_for(settled, lambda: {k: v["status"] for k, v in posts.items()}, seconds)
    return posts


def count_outcomes(
    tally: Tally,
    client: httpx.Client,
    author: dict[str, str],
    follower: dict[str, str],
    acknowledged: list[str],
) -> None:
    """What a client sees of every acknowledged post: ready, once in the follower's feed, with
    each variant once; counted into `tally` as lost, failed, duplicated and missing entries."""
    posts = settled_posts(client, author, acknowledged)
    tally.add("acknowledged", len(acknowledged))
    tally.add("lost", sum(p["status"] == "gone" for p in posts.values()))
    tally.add("failed", sum(p["status"] == "failed" for p in posts.values()))
    duplicated = incomplete = 0
    for post in posts.values():
        for media in post.get("media", []):
            pairs = [(v["name"], v["content_type"].split("/")[1]) for v in media["variants"]]
            duplicated += len(pairs) - len(set(pairs))
            incomplete += not set(pairs) >= IMAGE_VARIANTS
    tally.add("duplicated_variants", duplicated)
    tally.add("incomplete_variants", incomplete)
    # Fan-out runs after `ready`: give it the few seconds API.md allows, then count.
    ready = {pid for pid, p in posts.items() if p["status"] == "ready"}
    feed: list[str] = []

    def fanned_out() -> bool:
        nonlocal feed
        feed = [p["id"] for p in walk(client, "/api/v1/feed?order=latest", follower)]
        return ready <= set(feed)

    with contextlib.suppress(AssertionError):  # counted below
        wait_for(fanned_out, lambda: None, 30)
    tally.add("missing_from_feed", len(ready - set(feed)))
    tally.add("duplicated_feed_entries", len(feed) - len(set(feed)))
