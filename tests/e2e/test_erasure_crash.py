"""An erasure whose worker is SIGKILLed between two of its batches is finished by another worker:
nothing of the account is left in any table or on the disk, and nothing of anyone else's is
lost."""

from __future__ import annotations

import io
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from PIL import Image

from tests.e2e.test_serve import _sign_up
from tests.servers import Server, Worker

POSTS = 30
# One post per transaction: a wide window between two batches in which to kill the worker.
DOOMED_ENV = {"GLIMPSE_ERASURE_BATCH_SIZE": "1", "GLIMPSE_JOB_LEASE_SECONDS": "2"}


def _photo(n: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64 + n, 48), (n * 7 % 256, 40, 90)).save(out, "JPEG")
    return out.getvalue()


def _scalar(data_dir: Path, sql: str, *args: object) -> int:
    with sqlite3.connect(data_dir / "glimpse.db", timeout=30) as db:
        return int(db.execute(sql, args).fetchone()[0])


def _wait(condition: Callable[[], bool], what: Callable[[], str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.002)


def _jobs(data_dir: Path) -> list[tuple[str, str, int, str]]:
    with sqlite3.connect(data_dir / "glimpse.db") as db:
        return list(db.execute("SELECT name, state, attempts, available_at FROM jobs").fetchall())


def _files(data_dir: Path) -> set[str]:
    root = data_dir / "media"
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and ".staging" not in p.parts and "readyz" not in p.parts
    }


def _keys_of(data_dir: Path, author_id: int) -> set[str]:
    with sqlite3.connect(data_dir / "glimpse.db") as db:
        originals = db.execute("SELECT original_key FROM media WHERE author_id = ?", (author_id,))
        keys = {row[0] for row in originals}
        variants = db.execute(
            "SELECT v.key FROM media_variants v JOIN media m ON m.id = v.media_id"
            " WHERE m.author_id = ?",
            (author_id,),
        )
        return keys | {row[0] for row in variants}


def test_an_erasure_killed_between_batches_is_finished_by_another_worker(
    tmp_path: Path,
    start_server: Callable[..., Server],
    start_worker: Callable[..., Worker],
) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir, "--no-workers")
    with httpx.Client(base_url=server.base, timeout=60) as client:
        alice, bob = _sign_up(client, "alice"), _sign_up(client, "bob")
        alice_id = int(client.get("/api/v1/me", headers=alice).json()["id"])
        assert client.post("/api/v1/users/alice/follow", headers=bob).status_code == 200
        for n in range(POSTS):
            response = client.post(
                "/api/v1/posts", headers=alice, files=[("file", (f"{n}.jpg", _photo(n)))]
            )
            assert response.status_code == 202, response.text
        bobs = client.post("/api/v1/posts", headers=bob, files=[("file", ("b.jpg", _photo(99)))])
        helper = start_worker(data_dir)
        _wait(
            lambda: (
                _scalar(data_dir, "SELECT count(*) FROM posts WHERE status = 'ready'") == POSTS + 1
            ),
            lambda: "the uploads were never processed",
        )
        assert helper.stop() == 0
        before, alices = _files(data_dir), _keys_of(data_dir, alice_id)
        assert alices <= before

        response = client.request(
            "DELETE", "/api/v1/me", headers=alice, json={"password": "correct horse"}
        )
        assert response.status_code == 202, response.text
        doomed = start_worker(data_dir, DOOMED_ENV)
        count = "SELECT count(*) FROM posts WHERE author_id = ?"
        _wait(
            lambda: _scalar(data_dir, count, alice_id) < POSTS, lambda: "the erasure never started"
        )
        doomed.process.send_signal(signal.SIGKILL)  # between two batches, or inside one
        doomed.process.wait(timeout=10)
        left = _scalar(data_dir, count, alice_id)
        assert 0 < left < POSTS, left  # killed midway

        survivor = start_worker(data_dir, {"GLIMPSE_JOB_LEASE_SECONDS": "2"})
        finished = "SELECT count(*) FROM account_erasures WHERE finished_at IS NOT NULL"
        _wait(lambda: _scalar(data_dir, finished) == 1, lambda: "the erasure was never finished")
        # The erasure's purges are due at once. (Processing left guard purges due a lease after
        # it stored each photo's variants: not the erasure's, and harmless when they run.)
        # (The clock is passed in: SQLite's strftime('%s') is whole seconds, so a purge due at
        # x.4 s looked not yet due at x.6 s, and the worker was stopped before it ran.)
        queued = (
            "SELECT count(*) FROM jobs WHERE name = 'erase_account'"
            " OR (name = 'purge_media_keys' AND available_at <= ?)"
        )
        _wait(
            lambda: _scalar(data_dir, queued, time.time()) == 0,
            lambda: f"purges left: {_jobs(data_dir)}",
        )
        assert survivor.stop() == 0

        assert _files(data_dir) == before - alices
        for table, column in (
            ("users", "id"), ("posts", "author_id"), ("media", "author_id"),
            ("follows", "followee_id"), ("access_tokens", "user_id"),
        ):  # fmt: skip
            n = _scalar(data_dir, f"SELECT count(*) FROM {table} WHERE {column} = ?", alice_id)
            assert n == 0, table
        me = client.get("/api/v1/me", headers=bob).json()
        assert me["following_count"] == 0
        post = client.get(f"/api/v1/posts/{bobs.json()['id']}", headers=bob).json()
        assert post["status"] == "ready"
        dead = "SELECT count(*) FROM jobs WHERE state = 'dead'"
        assert _scalar(data_dir, dead) == 0
    assert server.stop() == 0
