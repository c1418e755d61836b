"""The scale stack as README's "Running at scale" runs it: two `glimpse serve --no-workers` API
processes and two `glimpse worker` processes over PostgreSQL, Redis, RabbitMQ and an S3 server,
every one of them real. An upload through one API process is processed by a worker, fanned out,
and read (feed, media bytes from the bucket) through the other; `/readyz` checks all four.
With CI=true a service that cannot be reached fails the test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.broker import Broker, broker  # noqa: F401  (a fixture)
from tests.conftest import testdata
from tests.databases import PostgresDatabases
from tests.redis_service import redis_url  # noqa: F401  (a fixture)
from tests.s3server import S3Server, bucket_keys
from tests.servers import Server, Worker


@pytest.fixture
def scale_env(
    postgres_databases: PostgresDatabases,
    redis_url: str,  # noqa: F811
    broker: Broker,  # noqa: F811
    s3_server: S3Server,
) -> Iterator[dict[str, str]]:
    database = postgres_databases.fresh()
    yield {
        "GLIMPSE_DATABASE_URL": database,
        "GLIMPSE_CACHE_URL": redis_url,
        "GLIMPSE_QUEUE_URL": broker.url(),
        "GLIMPSE_STORAGE_URL": s3_server.storage_url(),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "GLIMPSE_SECRET_KEY": "scale-stack-test-secret",
        "GLIMPSE_RATE_LIMITS": "off",
    }
    postgres_databases.drop(database)


def _sign_up(client: httpx.Client, username: str) -> dict[str, str]:
    body = {"username": username, "password": "correct horse"}
    assert client.post("/api/v1/accounts", json=body).status_code == 201
    token = client.post("/api/v1/auth/token", json=body).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def test_two_apis_and_two_workers_over_postgres_redis_rabbitmq_and_s3(
    tmp_path: Path,
    scale_env: dict[str, str],
    start_server: Callable[..., Server],
    start_worker: Callable[..., Worker],
) -> None:
    one = start_server(tmp_path / "api1", "--no-workers", env=scale_env)
    two = start_server(tmp_path / "api2", "--no-workers", env=scale_env)
    start_worker(tmp_path / "worker1", scale_env)
    start_worker(tmp_path / "worker2", scale_env)
    with (
        httpx.Client(base_url=one.base, timeout=30) as api1,
        httpx.Client(base_url=two.base, timeout=30) as api2,
    ):
        ready = api1.get("/readyz").json()
        assert ready["status"] == "ready", ready
        assert {"database", "storage", "queue", "cache"} <= set(ready["checks"])
        alice = _sign_up(api1, "alice")
        bob = _sign_up(api2, "bob")
        assert api2.post("/api/v1/users/alice/follow", headers=bob).status_code == 200
        assert api2.get("/api/v1/feed", headers=bob).json()["items"] == []
        photo = testdata("orientation/Landscape_3.jpg")
        response = api1.post(
            "/api/v1/posts", headers=alice, files=[("file", (photo.name, photo.read_bytes()))]
        )
        assert response.status_code == 202, response.text
        post_id = response.json()["id"]
        deadline = time.monotonic() + 60
        items: list[dict[str, object]] = []
        while time.monotonic() < deadline and not items:
            items = api2.get("/api/v1/feed?order=latest", headers=bob).json()["items"]
            time.sleep(0.2)
        assert [p["id"] for p in items] == [post_id]
        variant = items[0]["media"][0]["variants"][0]  # type: ignore[index]
        served = api2.get(variant["url"])
        assert served.status_code == 200 and served.content[:2] == b"\xff\xd8"
        keys = bucket_keys(scale_env["GLIMPSE_STORAGE_URL"])
        assert any(k.startswith("originals/") for k in keys)
        assert sum(k.startswith("v/") for k in keys) >= 8
        # A like through one process shows through the other (the summary is never stale).
        assert api1.post(f"/api/v1/posts/{post_id}/like", headers=bob).status_code < 300
        assert api2.get(f"/api/v1/posts/{post_id}", headers=alice).json()["like_count"] == 1
