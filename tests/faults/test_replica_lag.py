"""A streaming replica that lags 10 s behind the primary (`recovery_min_apply_delay = '10s'`, a
real replica of a private primary, tests/integration/test_read_replicas.py's cluster), under a
real `glimpse serve` and worker: every write a client makes is seen by that client's very next
read (read-your-own-writes), while a client that wrote nothing reads the replica's older state
(counted, to show the lag is real).

(test_read_replicas.py pauses replay, in-process; this is a replica 10 s behind, as a busy or
distant one is, under real processes.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.databases import run_sync
from tests.faults.conftest import Stack, Tally, post_photo, sign_up, times, wait_for
from tests.integration.test_read_replicas import Cluster, _bin, _sql
from tests.servers import Server, Worker

LAG = "10s"
ROUNDS = times("replica_rounds", 2)


@pytest.fixture
def lagging_cluster() -> Iterator[Cluster]:
    if _bin("initdb") is None or _bin("pg_basebackup") is None:
        reason = "PostgreSQL's initdb and pg_basebackup are not installed"
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(reason)
    root = Path(tempfile.mkdtemp(prefix="glimpse-lag-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = Cluster(root)
    try:
        cluster.start()
        run_sync(_sql(cluster.url(cluster.primary_port, "postgres"), "CREATE DATABASE glimpse"))
        from glimpse.db.migrate import upgrade_to_head

        upgrade_to_head(cluster.url(cluster.primary_port))
        replica = cluster.url(cluster.replica_port, "postgres")
        run_sync(_sql(replica, f"ALTER SYSTEM SET recovery_min_apply_delay = '{LAG}'"))
        run_sync(_sql(replica, "SELECT pg_reload_conf()"))
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _replica_has(cluster: Cluster, sql: str) -> Callable[[], bool]:
    def has() -> bool:
        try:
            return bool(run_sync(_sql(cluster.url(cluster.replica_port), sql)))
        except asyncpg.UndefinedTableError:  # the schema itself not yet replayed
            return False

    return has


def test_a_replica_10_s_behind(
    scale_stack: Stack,
    lagging_cluster: Cluster,
    processes: list[Server | Worker],
    tally: Tally,
) -> None:
    cluster = lagging_cluster
    env = {
        "GLIMPSE_DATABASE_URL": cluster.url(cluster.primary_port),
        "GLIMPSE_DATABASE_REPLICA_URLS": cluster.url(cluster.replica_port),
    }
    server = scale_stack.server(env=env)
    processes += [server, scale_stack.worker(0, env)]
    violations: list[str] = []
    stale_for_others = 0

    with httpx.Client(base_url=server.base, timeout=60) as client:
        users = {name: sign_up(client, name) for name in ("alice", "bob", "carol")}
        alice, bob = users["alice"], users["bob"]
        # The accounts reach the replica (10 s later): from here on, only the lag is tested.
        wait_for(_replica_has(cluster, "SELECT count(*) = 3 FROM users"), lambda: "no replay", 60)
        assert client.get("/readyz").json()["checks"]["database_replica_0"] == "ok"

        def own(what: str, ok: bool) -> None:
            tally.add("own_reads")
            if not ok:
                violations.append(what)

        for n in range(ROUNDS):
            # A new post, read back at once, before the replica has it.
            response = post_photo(client, alice, n)
            assert response.status_code == 202, response.text
            post_id = response.json()["id"]
            post_path = f"/api/v1/posts/{post_id}"
            own("new_post", client.get(post_path, headers=alice).status_code == 200)
            assert not _replica_has(
                cluster, f"SELECT count(*) > 0 FROM posts WHERE id = {post_id}"
            )(), "the replica had the post already: the read proved nothing"
            # Comments and likes are for ready posts (409 `post_not_ready` before, API.md). The
            # worker's processing takes what it takes on a busy machine, so it stays out of the
            # part of the round that must fit inside the lag.
            wait_for(
                lambda path=post_path: client.get(path, headers=alice).json()["status"] == "ready",
                lambda path=post_path: f"{path} never became ready",
                60,
            )

            bio = f"bio {n}"
            assert client.patch("/api/v1/me", headers=alice, json={"bio": bio}).status_code == 200
            own("bio", client.get("/api/v1/me", headers=alice).json()["bio"] == bio)
            stale_for_others += client.get("/api/v1/users/alice", headers=bob).json()["bio"] != bio
            # (post_count counts ready posts; each round deletes its own: 1 now, 0 after.)
            me = client.get("/api/v1/users/alice", headers=alice).json()
            own("post_count", me["post_count"] == 1)

            assert client.post("/api/v1/users/carol/follow", headers=alice).status_code == 200
            following = client.get("/api/v1/users/alice/following", headers=alice).json()
            own("follow", [u["username"] for u in following["items"]] == ["carol"])
            carol = client.get("/api/v1/users/carol", headers=alice).json()
            own("follow_status", carol["follow_status"] == "following")

            path = f"{post_path}/comments"
            assert client.post(path, headers=alice, json={"text": "mine"}).status_code == 201
            comments = client.get(path, headers=alice).json()["items"]
            own("comment", [c["text"] for c in comments] == ["mine"])

            assert client.post(f"{post_path}/like", headers=alice).status_code < 300
            post = client.get(post_path, headers=alice).json()
            own("like", post["liked_by_me"] and post["like_count"] == 1)

            assert client.delete("/api/v1/users/carol/follow", headers=alice).status_code == 204
            following = client.get("/api/v1/users/alice/following", headers=alice).json()
            own("unfollow", following["items"] == [])
            assert client.delete(post_path, headers=alice).status_code == 204
            own("delete", client.get(post_path, headers=alice).status_code == 404)
            me = client.get("/api/v1/users/alice", headers=alice).json()
            own("post_count_after_delete", me["post_count"] == 0)
            tally.injected += 1
            # Every read since the bio came while the replica still lacked the bio, the
            # round's first write (or the reads proved nothing): a state, not a clock.
            bio_sql = f"SELECT bio = '{bio}' FROM users WHERE username = 'alice'"
            assert not _replica_has(cluster, bio_sql)(), "the round outlasted the replica's lag"
            # The next round starts from a replica that caught up.
            wait_for(
                _replica_has(cluster, bio_sql),
                lambda: "no replay",
                60,
            )
    tally.add("stale_reads_by_others", stale_for_others)
    tally.add("own_writes_not_seen", len(violations))
    assert stale_for_others == ROUNDS, "bob read alice's new bio at once: the replica did not lag"
    assert not violations, violations
