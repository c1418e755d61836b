"""Kept first pages (feed/kept_pages.py) over two streaming replicas read in turn: the marks a
page is kept under and the page itself must come from states that agree, or a page built on the
replica that lags is kept under the marks of the one that does not, and served on after the
lagging one has caught up."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from glimpse.config import Settings
from glimpse.db.migrate import upgrade_to_head
from tests.conftest import Glimpse, running
from tests.databases import run_sync
from tests.integration import test_read_replicas as rr


class TwoReplicas(rr.Cluster):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.second_port = rr._free_port()

    def start(self) -> None:
        super().start()
        basebackup = rr._bin("pg_basebackup")
        assert basebackup
        second = self.root / "second"
        rr._run(
            [
                basebackup,
                *("-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres"),
                *("-D", str(second), "-R", "-X", "stream"),
            ]
        )
        self._start(second, self.second_port)


@pytest.fixture(scope="module")
def two_replicas() -> Iterator[TwoReplicas]:
    if rr._bin("initdb") is None or rr._bin("pg_basebackup") is None:
        rr._unavailable("PostgreSQL's initdb and pg_basebackup are not installed")
    root = Path(tempfile.mkdtemp(prefix="glimpse-kept-replicas-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = TwoReplicas(root)
    try:
        cluster.start()
    except (subprocess.SubprocessError, OSError) as exc:
        cluster.stop()
        rr._unavailable(f"could not start a private primary and two replicas: {exc!r}")
    try:
        run_sync(rr._sql(cluster.url(cluster.primary_port, "postgres"), "CREATE DATABASE glimpse"))
        upgrade_to_head(cluster.url(cluster.primary_port))
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def glimpse_two(two_replicas: TwoReplicas, tmp_path: Path) -> AsyncIterator[Glimpse]:
    cluster = two_replicas
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=cluster.url(cluster.primary_port),
        database_replica_urls=",".join(
            cluster.url(port) for port in (cluster.replica_port, cluster.second_port)
        ),
        secret_key="test-secret",
        worker_poll_seconds=0.01,
        rate_limits="off",
        feed_kept_page_seconds=30,
    )
    async with running(settings) as glimpse:
        yield glimpse
    for port in (cluster.replica_port, cluster.second_port):
        await rr._caught_up(cluster, port)


async def test_a_block_stays_in_force_once_both_replicas_hold_it(
    two_replicas: TwoReplicas, glimpse_two: Glimpse
) -> None:
    g, cluster = glimpse_two, two_replicas
    tag = f"{time.monotonic_ns() % 10**8}"
    viewer_name, author_name = f"kv{tag}", f"ka{tag}"
    viewer, author = await g.signup(viewer_name), await g.signup(author_name)
    await g.client.post(f"/api/v1/users/{author_name}/follow", headers=viewer)
    post = (await g.upload(author)).json()
    await g.run_jobs()
    for port in (cluster.replica_port, cluster.second_port):
        await rr._caught_up(cluster, port)

    keys = [(order, limit) for order in ("latest", "ranked") for limit in (1, 2, 3, 20)]

    async def feed_ids(order: str = "latest", limit: int = 20) -> list[str]:
        page = await g.client.get(
            "/api/v1/feed", params={"order": order, "limit": limit}, headers=viewer
        )
        assert page.status_code == 200, page.text
        return [p["id"] for p in page.json()["items"]]

    for order, limit in keys:
        for _ in range(3):
            assert await feed_ids(order, limit) == [post["id"]]
    # One replica stops replaying; the author blocks the viewer (the author's write: the
    # viewer's reads still go to the replicas, in turn).
    await rr._sql(cluster.url(cluster.second_port), "SELECT pg_wal_replay_pause()")
    blocked = await g.client.post(f"/api/v1/users/{viewer_name}/block", headers=author)
    assert blocked.status_code == 204
    await rr._caught_up(cluster, cluster.replica_port)
    for order, limit in keys:
        for _ in range(3):
            await feed_ids(order, limit)  # as each replica has it: the lagging one shows it
    await rr._caught_up(cluster, cluster.second_port)
    # Both replicas hold the block now: no read may show the post any more.
    shown = [
        (order, limit) for order, limit in keys for _ in range(2) if await feed_ids(order, limit)
    ]
    assert shown == []
