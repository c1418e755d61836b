"""FLUSHALL Redis under the scale stack, again and again, while posts are processed and fanned
out: every feed is rebuilt, each ready post is in it once, and nothing revoked reappears: an
author unfollowed, a post deleted, a user blocked.

The flushed Redis is a redis-server of this test's own, on a free port: FLUSHALL on the machine's
Redis would wipe every other user's keys. (tests/api/test_feed_redis.py deletes one test's keys
from the shared server, in-process; this is the whole server, under real processes.)
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.faults.conftest import (
    Stack,
    Tally,
    post_photo,
    settled_posts,
    sign_up,
    times,
    wait_for,
    walk,
)
from tests.servers import Server, Worker, free_port

FLUSHES = times("redis_flushes", 5)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    server = shutil.which("redis-server")
    if server is None:
        (pytest.fail if _ci() else pytest.skip)("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, db=5)
    try:
        wait_for(lambda: _pings(client), lambda: "redis-server did not start", 30)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(10)


def _ci() -> bool:
    return os.environ.get("CI") == "true"


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_flushall_redis(
    scale_stack: Stack,
    private_redis: redis.Redis,
    processes: list[Server | Worker],
    tally: Tally,
) -> None:
    rng = random.Random(4)
    port = private_redis.connection_pool.connection_kwargs["port"]
    env = {"GLIMPSE_CACHE_URL": f"redis://127.0.0.1:{port}/5"}
    server = scale_stack.server(env=env)
    processes += [server, scale_stack.worker(0, env)]
    with httpx.Client(base_url=server.base, timeout=60) as client:
        users = {name: sign_up(client, name) for name in ("alice", "bob", "carol", "vic", "wes")}
        for viewer in ("vic", "wes"):
            for author in ("alice", "bob", "carol"):
                path = f"/api/v1/users/{author}/follow"
                assert client.post(path, headers=users[viewer]).status_code == 200
        posts: dict[str, list[str]] = {"alice": [], "bob": [], "carol": []}
        seed = 0
        for author in posts:
            for _ in range(2):
                seed += 1
                response = post_photo(client, users[author], seed)
                assert response.status_code == 202, response.text
                posts[author].append(response.json()["id"])
        for author, ids in posts.items():
            settled_posts(client, users[author], ids)

        def feed(viewer: str, order: str) -> list[str]:
            return [p["id"] for p in walk(client, f"/api/v1/feed?order={order}", users[viewer])]

        everything = {pid for ids in posts.values() for pid in ids}
        wait_for(lambda: set(feed("vic", "latest")) == everything, lambda: feed("vic", "latest"))

        # What is revoked: vic unfollows bob and blocks carol; alice deletes a post.
        assert client.delete("/api/v1/users/bob/follow", headers=users["vic"]).status_code == 204
        assert client.post("/api/v1/users/carol/block", headers=users["vic"]).status_code == 204
        deleted = posts["alice"].pop(0)
        response = client.delete(f"/api/v1/posts/{deleted}", headers=users["alice"])
        assert response.status_code == 204
        revoked_for_vic = {deleted, *posts["bob"], *posts["carol"]}

        for _ in range(FLUSHES):
            # A new post of alice's, flushed somewhere between its upload and its fan-out.
            seed += 1
            response = post_photo(client, users["alice"], seed)
            assert response.status_code == 202, response.text
            posts["alice"].append(response.json()["id"])
            time.sleep(rng.uniform(0.0, 1.5))
            assert private_redis.flushall()
            tally.injected += 1
            settled_posts(client, users["alice"], posts["alice"][-1:])
            expected = {
                "vic": set(posts["alice"]),
                "wes": set(posts["alice"]) | set(posts["bob"]) | set(posts["carol"]),
            }
            for viewer, wanted in expected.items():
                for order in ("latest", "ranked"):
                    seen: list[str] = []

                    def rebuilt(
                        v: str = viewer, o: str = order, w: set[str] = wanted, s: list[str] = seen
                    ) -> bool:
                        s[:] = feed(v, o)
                        return set(s) >= w

                    with contextlib.suppress(AssertionError):  # counted below
                        wait_for(rebuilt, lambda: None, 30)
                    tally.add("feeds_read", 1)
                    tally.add("missing_from_feed", len(wanted - set(seen)))
                    tally.add("duplicated_feed_entries", len(seen) - len(set(seen)))
                    tally.add("revoked_reappeared", len(set(seen) - wanted))
                    if viewer == "vic":
                        tally.add("revoked_reappeared", len(set(seen) & revoked_for_vic))
            # Revoked things stay revoked outside feeds too.
            got = client.get(f"/api/v1/posts/{deleted}", headers=users["vic"]).status_code
            tally.add("revoked_reappeared", got != 404)
            following = walk(client, "/api/v1/users/vic/following", users["vic"])
            tally.add("revoked_reappeared", len({u["username"] for u in following} - {"alice"}))
    counts = tally.counts
    for bad in ("missing_from_feed", "duplicated_feed_entries", "revoked_reappeared"):
        assert counts[bad] == 0, counts
