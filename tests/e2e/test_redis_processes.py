"""The scale layout with Redis, as real processes: two `glimpse serve --no-workers` API
processes and one `glimpse worker`, sharing the database, the media folder and one Redis
(GLIMPSE_CACHE_URL). A post processed and fanned out by the worker shows in a feed read through
either API process, and the API processes share one rate-limit budget."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from glimpse.backends.redis_client import parse_redis_url
from tests.conftest import testdata
from tests.redis_service import redis_url  # noqa: F401  (a fixture)
from tests.servers import Server, Worker


def test_two_api_processes_and_a_worker_share_feeds_and_budgets_in_redis(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
    start_server: Callable[..., Server],
    start_worker: Callable[..., Worker],
) -> None:
    data_dir = tmp_path / "data"
    env = {"GLIMPSE_CACHE_URL": redis_url, "GLIMPSE_RATE_LIMITS": "signup=3/hour"}
    one = start_server(data_dir, "--no-workers", env=env)
    two = start_server(data_dir, "--no-workers", env=env)
    start_worker(data_dir, env)
    with (
        httpx.Client(base_url=one.base, timeout=30) as api1,
        httpx.Client(base_url=two.base, timeout=30) as api2,
    ):
        assert api2.get("/readyz").json()["checks"]["cache"] == "ok"
        alice = _sign_up(api1, "alice")
        bob = _sign_up(api2, "bob")
        assert api1.post("/api/v1/users/alice/follow", headers=bob).status_code == 200
        assert api2.get("/api/v1/feed", headers=bob).json()["items"] == []  # built, in Redis
        photo = testdata("orientation/Landscape_3.jpg")
        response = api1.post(
            "/api/v1/posts", headers=alice, files=[("file", (photo.name, photo.read_bytes()))]
        )
        assert response.status_code == 202, response.text
        post_id = response.json()["id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # processed, then fanned out, by the worker
            items = api2.get("/api/v1/feed?order=latest", headers=bob).json()["items"]
            if items:
                break
            time.sleep(0.2)
        assert [p["id"] for p in items] == [post_id]
        bob_id = api2.get("/api/v1/me", headers=bob).json()["id"]
        target = parse_redis_url(redis_url)
        with redis.Redis.from_url(target.url) as cache:
            entries = cache.zrange(f"{target.prefix}feed:{bob_id}", 0, -1)
        assert f"{int(post_id):019d}".encode() in {e.split(b":")[0] for e in entries}
        # One budget for both: alice (1), bob (2), carol (3) spent it, whichever process.
        assert _sign_up_status(api1, "carol") == 201
        assert _sign_up_status(api2, "dave") == 429
        assert _sign_up_status(api1, "erin") == 429


def _sign_up_status(client: httpx.Client, username: str) -> int:
    body = {"username": username, "password": "correct horse"}
    return client.post("/api/v1/accounts", json=body).status_code


def _sign_up(client: httpx.Client, username: str) -> dict[str, str]:
    body = {"username": username, "password": "correct horse"}
    assert client.post("/api/v1/accounts", json=body).status_code == 201
    token = client.post("/api/v1/auth/token", json=body).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}
