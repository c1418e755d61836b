"""Read replicas against a real streaming replica: a private primary and a replica of it
(`initdb`, then `pg_basebackup -R`) started on free ports of this machine for this module.
Replay on the replica is paused to stand for lag: other users' reads then show the replica's
older state, while a caller's reads right after its own writes show those writes: in one
process, and across two `glimpse serve` processes that share a Redis (GLIMPSE_CACHE_URL)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from glob import glob
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.app import create_app
from glimpse.backends.redis_client import open_redis, parse_redis_url
from glimpse.backends.redis_write_notes import RedisWriteNotes
from glimpse.config import Settings
from glimpse.db.database import Database
from glimpse.db.migrate import upgrade_to_head
from glimpse.db.replicas import Replicas, act_as
from tests.conftest import Glimpse, _no_server_error, running
from tests.databases import run_sync
from tests.redis_service import RedisProxy, redis_or_skip
from tests.servers import Server


def _bin(name: str) -> str | None:
    found = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; the postgres OS user runs them then.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _run(argv: list[str]) -> None:
    subprocess.run(_as_postgres(argv), check=True, capture_output=True, timeout=120)


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.primary_port = _free_port()
        self.replica_port = _free_port()
        self.started: list[Path] = []

    def url(self, port: int, database: str = "glimpse") -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def _start(self, data: Path, port: int) -> None:
        options = f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg_ctl = _bin("pg_ctl")
        assert pg_ctl
        _run([pg_ctl, "-D", str(data), "-o", options, "-l", str(data) + ".log", "-w", "start"])
        self.started.append(data)

    def start(self) -> None:
        initdb, basebackup = _bin("initdb"), _bin("pg_basebackup")
        assert initdb and basebackup
        primary, replica = self.root / "primary", self.root / "replica"
        _run([initdb, "-D", str(primary), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        self._start(primary, self.primary_port)
        _run(
            [
                basebackup,
                *("-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres"),
                *("-D", str(replica), "-R", "-X", "stream"),
            ]
        )
        self._start(replica, self.replica_port)

    def stop(self) -> None:
        pg_ctl = _bin("pg_ctl")
        for data in reversed(self.started):
            subprocess.run(
                _as_postgres([str(pg_ctl), "-D", str(data), "-m", "immediate", "stop"]),
                capture_output=True,
                timeout=60,
            )


async def _sql(url: str, statement: str) -> object:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        return await connection.fetchval(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if _bin("initdb") is None or _bin("pg_basebackup") is None:
        _unavailable("PostgreSQL's initdb and pg_basebackup are not installed")
    root = Path(tempfile.mkdtemp(prefix="glimpse-replicas-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = Cluster(root)
    try:
        cluster.start()
    except (subprocess.SubprocessError, OSError) as exc:
        cluster.stop()
        _unavailable(f"could not start a private primary and replica: {exc!r}")
    try:
        run_sync(_sql(cluster.url(cluster.primary_port, "postgres"), "CREATE DATABASE glimpse"))
        upgrade_to_head(cluster.url(cluster.primary_port))
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _caught_up(cluster: Cluster, port: int | None = None) -> None:
    """Resume replay and wait until the replica (on `port`: by default the cluster's own)
    holds all the primary has."""
    replica = cluster.url(port or cluster.replica_port)
    await _sql(replica, "SELECT pg_wal_replay_resume()")
    target = await _sql(cluster.url(cluster.primary_port), "SELECT pg_current_wal_lsn()::text")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if await _sql(replica, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the replica did not catch up")


async def _lagging(cluster: Cluster) -> None:
    await _caught_up(cluster)
    await _sql(cluster.url(cluster.replica_port), "SELECT pg_wal_replay_pause()")


@contextlib.asynccontextmanager
async def _replicated_app(cluster: Cluster, tmp_path: Path, **extra: Any) -> AsyncIterator[Glimpse]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=cluster.url(cluster.primary_port),
        database_replica_urls=cluster.url(cluster.replica_port),
        secret_key="test-secret",
        media_gc_delay_seconds=0,
        worker_poll_seconds=0.01,
        feed_viewer_memo_seconds=0,
        rate_limits="off",
        **extra,
    )
    async with running(settings) as glimpse:
        yield glimpse
    await _caught_up(cluster)


@pytest.fixture
async def glimpse_replicated(cluster: Cluster, tmp_path: Path) -> AsyncIterator[Glimpse]:
    async with _replicated_app(cluster, tmp_path) as glimpse:
        yield glimpse


def _names(prefix: str) -> list[str]:
    tag = f"{time.monotonic_ns() % 10**8}"
    return [f"{prefix}{n}{tag}"[:30] for n in range(3)]


async def test_a_follow_is_in_the_followers_own_list_at_once_while_others_read_the_replica(
    cluster: Cluster, glimpse_replicated: Glimpse
) -> None:
    g = glimpse_replicated
    alice_name, bob_name, carol_name = _names("f")
    alice, bob = await g.signup(alice_name), await g.signup(bob_name)
    await g.signup(carol_name)
    await _lagging(cluster)

    response = await g.client.post(f"/api/v1/users/{carol_name}/follow", headers=alice)
    assert response.status_code == 200, response.text

    def names(page: httpx.Response) -> list[str]:
        assert page.status_code == 200, page.text
        return [u["username"] for u in page.json()["items"]]

    following = f"/api/v1/users/{alice_name}/following"
    assert names(await g.client.get(following, headers=alice)) == [carol_name]
    profile = (await g.client.get(f"/api/v1/users/{carol_name}", headers=alice)).json()
    assert profile["follower_count"] == 1
    # Bob wrote nothing since: his reads are the replica's, which has not replayed the follow.
    assert names(await g.client.get(following, headers=bob)) == []
    profile = (await g.client.get(f"/api/v1/users/{carol_name}", headers=bob)).json()
    assert profile["follower_count"] == 0

    await _caught_up(cluster)
    assert names(await g.client.get(following, headers=bob)) == [carol_name]


async def test_the_authors_new_post_and_the_feed_after_an_unfollow(
    cluster: Cluster, glimpse_replicated: Glimpse
) -> None:
    g = glimpse_replicated
    alice_name, bob_name, carol_name = _names("p")
    alice, bob, carol = [await g.signup(n) for n in (alice_name, bob_name, carol_name)]
    for headers in (alice, bob):
        await g.client.post(f"/api/v1/users/{carol_name}/follow", headers=headers)
    await g.run_jobs()
    await _lagging(cluster)

    post = (await g.upload(carol)).json()
    await g.run_jobs()
    profile = (await g.client.get(f"/api/v1/users/{carol_name}", headers=carol)).json()
    assert profile["post_count"] == 1
    page = await g.client.get(f"/api/v1/users/{carol_name}/posts", headers=carol)
    assert [p["id"] for p in page.json()["items"]] == [post["id"]]
    # Alice has not written since the replica stopped: she reads the replica's older profile.
    profile = (await g.client.get(f"/api/v1/users/{carol_name}", headers=alice)).json()
    assert profile["post_count"] == 0

    await _caught_up(cluster)

    def feed_ids(page: httpx.Response) -> list[str]:
        assert page.status_code == 200, page.text
        return [p["id"] for p in page.json()["items"]]

    assert feed_ids(await g.client.get("/api/v1/feed", headers=alice)) == [post["id"]]
    await _lagging(cluster)
    await g.client.delete(f"/api/v1/users/{carol_name}/follow", headers=alice)
    # Her feed right after the unfollow: the replica still has her following carol.
    assert feed_ids(await g.client.get("/api/v1/feed", headers=alice)) == []
    assert feed_ids(await g.client.get("/api/v1/feed", headers=bob)) == [post["id"]]


async def test_a_feed_built_while_the_replica_lags_holds_the_posts_made_before(
    cluster: Cluster,
    tmp_path: Path,
    redis_url: str,
) -> None:
    # A post that became ready before the reader's feed went live was pushed to no feed: the
    # rebuild must read it, on a replica that holds it or on the primary, whoever the reader.
    # (Feeds in Redis: building one writes nothing to the database that would send the
    # reader's reads to the primary anyway.)
    async with _replicated_app(cluster, tmp_path, cache_url=redis_url) as g:
        reader_name, author_name = _names("b")[:2]
        reader, author = await g.signup(reader_name), await g.signup(author_name)
        await g.client.post(f"/api/v1/users/{author_name}/follow", headers=reader)
        await g.run_jobs()
        await _lagging(cluster)

        post = (await g.upload(author)).json()
        await g.run_jobs()
        # Built now; shown as the replica has it (which the reader, who wrote nothing since,
        # may read), and once the replica has replayed the post, with it.
        assert (await g.client.get("/api/v1/feed", headers=reader)).status_code == 200
        await _caught_up(cluster)
        page = await g.client.get("/api/v1/feed", headers=reader)
        assert page.status_code == 200, page.text
        assert [p["id"] for p in page.json()["items"]] == [post["id"]]


async def test_a_replica_that_is_down_leaves_reads_to_the_primary(
    cluster: Cluster, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=cluster.url(cluster.primary_port),
        database_replica_urls=f"postgresql://postgres@127.0.0.1:{_free_port()}/glimpse",
        secret_key="test-secret",
        rate_limits="off",
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://glimpse.test",
            event_hooks={"response": [_no_server_error]},
        ) as client,
    ):
        g = Glimpse(client, app.state.container)
        (name,) = _names("d")[:1]
        headers = await g.signup(name)
        for _ in range(3):
            response = await client.get(f"/api/v1/users/{name}/followers", headers=headers)
            assert response.status_code == 200, response.text
            response = await client.get(f"/api/v1/users/{name}", headers=headers)
            assert response.status_code == 200, response.text
        # Reported, but the process stays in the proxy's rotation: the primary serves.
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database_replica_0"] != "ok"


async def test_readyz_reports_each_replica(cluster: Cluster, glimpse_replicated: Glimpse) -> None:
    response = await glimpse_replicated.client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["database_replica_0"] == "ok"


def _followed(page: httpx.Response) -> list[str]:
    assert page.status_code == 200, page.text
    return [u["username"] for u in page.json()["items"]]


async def _signup(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    account = {"username": name, "password": "correct horse"}
    assert (await client.post("/api/v1/accounts", json=account)).status_code == 201
    response = await client.post("/api/v1/auth/token", json=account)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_a_write_through_one_api_process_is_read_through_another(
    cluster: Cluster, redis_url: str, tmp_path: Path
) -> None:
    # Two API processes behind one Redis, as behind a proxy without affinity: the follow goes
    # through A, the reads right after it through B, which learns of the write from Redis.
    env = {
        "GLIMPSE_DATABASE_URL": cluster.url(cluster.primary_port),
        "GLIMPSE_DATABASE_REPLICA_URLS": cluster.url(cluster.replica_port),
        "GLIMPSE_CACHE_URL": redis_url,
        "GLIMPSE_SECRET_KEY": "test-secret",
    }
    servers: list[Server] = []
    try:
        for name in ("a", "b"):
            servers.append(
                Server(tmp_path / name, "--no-workers", env=env, log=tmp_path / f"{name}.log")
            )
        async with (
            httpx.AsyncClient(base_url=servers[0].base, timeout=30) as a,
            httpx.AsyncClient(base_url=servers[1].base, timeout=30) as b,
        ):
            alice_name, bob_name, carol_name = _names("x")
            alice, bob = await _signup(a, alice_name), await _signup(b, bob_name)
            await _signup(a, carol_name)
            await _lagging(cluster)

            assert (await a.post(f"/api/v1/users/{carol_name}/follow", headers=alice)).is_success
            following = f"/api/v1/users/{alice_name}/following"
            assert _followed(await b.get(following, headers=alice)) == [carol_name]
            profile = await b.get(f"/api/v1/users/{carol_name}", headers=alice)
            assert profile.json()["follower_count"] == 1
            # Bob wrote nothing: B serves his reads from the replica, which lags.
            assert _followed(await b.get(following, headers=bob)) == []
            assert (await b.get(f"/api/v1/users/{carol_name}", headers=bob)).json()[
                "follower_count"
            ] == 0

            # Once the replica has replayed the follow, alice's reads go back to it.
            await _caught_up(cluster)
            assert _followed(await b.get(following, headers=alice)) == [carol_name]
            await _sql(cluster.url(cluster.replica_port), "SELECT pg_wal_replay_pause()")
            assert (await b.delete(f"/api/v1/users/{carol_name}/follow", headers=alice)).is_success
            assert _followed(await a.get(following, headers=alice)) == []
            assert _followed(await a.get(following, headers=bob)) == [carol_name]  # replica
        for server in servers:
            assert server.stop() == 0
    finally:
        for server in servers:
            server.close()
        await _caught_up(cluster)


async def test_with_redis_down_a_callers_reads_after_its_writes_go_to_the_primary(
    cluster: Cluster, tmp_path: Path
) -> None:
    redis_or_skip()
    proxy = RedisProxy()
    await proxy.start()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=cluster.url(cluster.primary_port),
        database_replica_urls=cluster.url(cluster.replica_port),
        cache_url=proxy.url(f"glimpse-test-down-{time.monotonic_ns()}:"),
        secret_key="test-secret",
        feed_viewer_memo_seconds=0,
        rate_limits="off",
    )
    app = create_app(settings)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://glimpse.test",
                event_hooks={"response": [_no_server_error]},
            ) as client,
        ):
            alice_name, bob_name, carol_name = _names("r")
            alice, bob = await _signup(client, alice_name), await _signup(client, bob_name)
            await _signup(client, carol_name)
            await _lagging(cluster)
            following = f"/api/v1/users/{alice_name}/following"

            # Noted in Redis, then Redis goes: her reads cannot learn of the note, so they go
            # to the primary (and so do everybody's while Redis is down), never a 500.
            assert (
                await client.post(f"/api/v1/users/{carol_name}/follow", headers=alice)
            ).is_success
            await proxy.stop()
            assert _followed(await client.get(following, headers=alice)) == [carol_name]
            assert _followed(await client.get(following, headers=bob)) == [carol_name]
            # A write while Redis is down is noted in this process's memory.
            assert (
                await client.delete(f"/api/v1/users/{carol_name}/follow", headers=alice)
            ).is_success
            assert _followed(await client.get(following, headers=alice)) == []
            profile = await client.get(f"/api/v1/users/{carol_name}", headers=alice)
            assert profile.json()["follower_count"] == 0
    finally:
        await proxy.stop()
        await _caught_up(cluster)


async def test_one_statement_reads_of_two_processes_sharing_redis(
    cluster: Cluster, redis_url: str, glimpse_replicated: Glimpse
) -> None:
    # The hot paths' one-statement reads (Database.fetch: feed pages, the tray) of two
    # processes' Databases whose notes are in one Redis: the writer's next read through the
    # other sees its write; another user's is the replica's.
    g = glimpse_replicated
    alice_name, bob_name, _ = _names("s")
    await g.signup(alice_name)
    await g.signup(bob_name)
    target = parse_redis_url(redis_url)
    clients = [open_redis(target), open_redis(target)]
    a, b = (
        Database(
            cluster.url(cluster.primary_port),
            replica_urls=[cluster.url(cluster.replica_port)],
            replica_notes=RedisWriteNotes(client, target.prefix),
        )
        for client in clients
    )
    bio = text("SELECT bio FROM users WHERE username = :name")
    try:
        async with a.read() as session:
            rows = await session.execute(text("SELECT username, id FROM users"))
            ids = {name: user_id for name, user_id in rows.all()}
        await _lagging(cluster)
        act_as(ids[alice_name])
        async with a.write() as session:
            await session.execute(
                text("UPDATE users SET bio = 'new' WHERE username = :name"), {"name": alice_name}
            )
        assert await b.fetch(bio, {"name": alice_name}, replica=True) == [("new",)]
        act_as(ids[bob_name])
        assert await b.fetch(bio, {"name": alice_name}, replica=True) == [("",)]
        await _caught_up(cluster)
        assert await b.fetch(bio, {"name": alice_name}, replica=True) == [("new",)]
    finally:
        act_as(None)
        for database in (a, b):
            await database.dispose()
        for client in clients:
            await client.aclose()


async def test_a_replica_that_failed_is_left_alone_for_a_while() -> None:
    # Reads must not each wait for a connection to fail while a replica is down: after one
    # failure, its reads go to the primary without trying it, for DOWN_SECONDS.
    replicas = Replicas([f"postgresql+asyncpg://postgres@127.0.0.1:{_free_port()}/glimpse"])
    tried = 0
    sessions = replicas._sessions[0]

    def counted() -> AsyncSession:
        nonlocal tried
        tried += 1
        return sessions()

    replicas._sessions[0] = counted  # type: ignore[assignment]
    act_as(None)
    try:
        assert await replicas.open() is None
        assert tried == 1
        assert await replicas.open() is None
        assert await replicas.fetch(text("SELECT 1"), {}) is None
        assert tried == 1
        replicas._down_until[0] = 0.0  # DOWN_SECONDS later
        assert await replicas.open() is None
        assert tried == 2
        replicas._down_until[0] = 0.0
        assert await replicas.fetch(text("SELECT 1"), {}) is None  # fails, and says so
        assert await replicas.open() is None
        assert tried == 2
    finally:
        await replicas.dispose()
