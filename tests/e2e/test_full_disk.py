"""`glimpse serve` on a data disk that fills up: every route answers (503 where it must write,
the feed and other reads where they can), no process dies, and all works again once space
returns. A real tmpfs, mounted for the test (root only, as CI runs)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import testdata
from tests.servers import Server

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root"
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    return filler


def _token(client: httpx.Client, name: str) -> dict[str, str]:
    assert (
        client.post(
            "/api/v1/accounts", json={"username": name, "password": "correct horse"}
        ).status_code
        == 201
    )
    response = client.post(
        "/api/v1/auth/token", json={"username": name, "password": "correct horse"}
    )
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_a_full_data_disk_gets_503s_and_no_process_dies(
    small_disk: Path, start_server: Callable[..., Server]
) -> None:
    data_dir = small_disk / "data"
    env = {"GLIMPSE_RATE_LIMITS": "off", "GLIMPSE_STORAGE_FREE_BYTES_FLOOR": "0"}
    server = start_server(data_dir, "--workers", "1", env=env)
    with httpx.Client(base_url=server.base, timeout=30) as client:
        alice, bob = _token(client, "alice"), _token(client, "bob")
        carol = _token(client, "carol")  # never reads her feed before the disk is full
        assert client.post("/api/v1/users/alice/follow", headers=bob).status_code == 200
        assert client.post("/api/v1/users/alice/follow", headers=carol).status_code == 200
        assert client.get("/api/v1/feed", headers=bob).status_code == 200
        filler = _fill(small_disk)
        # Reads need no disk space: a feed that has to be rebuilt is read from the posts.
        for order in ("ranked", "latest"):
            response = client.get("/api/v1/feed", headers=carol, params={"order": order})
            assert response.status_code == 200, response.text
        answers = []
        for _ in range(3):  # every kind of route, more than once: metrics are written each time
            for method, path, body in [
                ("GET", "/api/v1/feed", None),
                ("GET", "/api/v1/feed?order=latest", None),
                ("GET", "/api/v1/users/alice", None),
                ("GET", "/api/v1/users/alice/followers", None),
                ("POST", "/api/v1/users/bob/follow", None),
                ("DELETE", "/api/v1/users/alice/follow", None),
                ("POST", "/api/v1/users/alice/block", None),
                ("GET", "/api/v1/me", None),
                ("GET", "/healthz", None),
                ("POST", "/api/v1/auth/token", {"username": "alice", "password": "wrong horse"}),
            ]:
                response = client.request(
                    method, path, headers=alice if "bob" in path else bob, json=body
                )
                answers.append((path, response.status_code))
                assert response.status_code < 500 or response.status_code == 503, (
                    path,
                    response.text,
                )
                if response.status_code == 503:
                    assert response.headers.get("Retry-After"), path
        assert server.process.poll() is None, "glimpse serve died on a full disk"
        assert all(p.is_running() for p in server.worker_processes())
        assert ("/healthz", 200) in answers
        filler.unlink()
        assert client.post("/api/v1/users/bob/follow", headers=alice).status_code == 200
        assert client.get("/api/v1/feed", headers=alice).status_code == 200
    assert server.stop() == 0


def _wait_for_start_up_waits(log: Path, tries: int) -> None:
    """Until the serve's log shows a worker waiting at start-up for a writable database
    `tries` times."""
    deadline = time.monotonic() + 60
    while log.read_text().count("the database cannot be written at start-up; waiting") < tries:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def _published(client: httpx.Client, headers: dict[str, str]) -> dict[str, object]:
    """A photo uploaded and the post once its processing is over (ready or failed)."""
    photo = testdata("camera/DSCN0010.jpg")
    response = client.post(
        "/api/v1/posts", headers=headers, files=[("file", (photo.name, photo.read_bytes()))]
    )
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 60
    while (post := client.get(f"/api/v1/posts/{response.json()['id']}", headers=headers).json())[
        "status"
    ] == "processing":
        assert time.monotonic() < deadline, "the worker never took the upload"
        time.sleep(0.1)
    return dict(post)


def test_a_worker_started_while_the_disk_is_full_waits_for_room_then_works(
    tmp_path: Path, small_disk: Path, start_server: Callable[..., Server]
) -> None:
    # A worker can start after the disk filled: its serve turned ready before the worker was
    # up, or the supervisor replaced one that died. Taking its id node is a write; it must wait
    # for room rather than die of it (and be started again and again meanwhile).
    log = tmp_path / "serve.log"
    env = {"GLIMPSE_STORAGE_FREE_BYTES_FLOOR": "0"}
    server = start_server(small_disk / "data", "--workers", "1", env=env, log=log)
    with httpx.Client(base_url=server.base, timeout=30) as client:
        alice = _token(client, "alice")
        filler = _fill(small_disk)
        (first,) = server.worker_processes()
        first.kill()
        first.wait(10)
        _wait_for_start_up_waits(log, 1)
        time.sleep(2)  # a few more tries, each failing as the first did
        (second,) = server.worker_processes()
        assert second.pid != first.pid and second.is_running()
        assert second.status() != psutil.STATUS_ZOMBIE
        filler.unlink()
        assert _published(client, alice)["status"] == "ready"
        assert server.worker_processes() == [second]
        # The one this test killed is the only worker that ended.
        assert log.read_text().count("exited with") == 1
    assert server.stop() == 0


def test_a_worker_waiting_for_room_stops_when_told_as_a_stop_not_a_failure(
    tmp_path: Path, small_disk: Path, start_server: Callable[..., Server]
) -> None:
    # A deploy's SIGTERM must not wait out the minute a worker gives a full disk at start-up,
    # nor end it as a failure when that minute is up.
    log = tmp_path / "serve.log"
    env = {"GLIMPSE_STORAGE_FREE_BYTES_FLOOR": "0"}
    server = start_server(small_disk / "data", "--workers", "1", env=env, log=log)
    _fill(small_disk)
    (first,) = server.worker_processes()
    first.kill()
    first.wait(10)
    _wait_for_start_up_waits(log, 1)
    assert server.stop() == 0
    assert "the worker process failed" not in log.read_text()


def _readiness_within(
    client: httpx.Client, status: int, seconds: float
) -> tuple[dict[str, str], float]:
    """Polls /readyz until it answers `status`; its checks and how long that took."""
    started = time.monotonic()
    while True:
        response = client.get("/readyz")
        if response.status_code == status:
            return response.json()["checks"], time.monotonic() - started
        assert time.monotonic() - started < seconds, response.text
        time.sleep(0.25)


def test_readyz_turns_503_when_the_database_cannot_be_written_or_is_moved_and_back(
    tmp_path: Path, start_server: Callable[..., Server]
) -> None:
    # API.md: /readyz turns 503 within 15 s of a failure and back within 15 s of recovery.
    data_dir = tmp_path / "data"
    server = start_server(data_dir, "--workers", "1")
    database = data_dir / "glimpse.db"
    with httpx.Client(base_url=server.base, timeout=30) as client:
        _readiness_within(client, 200, 15)
        # A writer that never lets go (a stuck backup, a debugging session): reads still
        # work, no post can be written, so the server is not ready.
        holder = sqlite3.connect(database, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            checks, _ = _readiness_within(client, 503, 15)
            assert checks["database"] in (
                "timed out",
                "failed: cannot write to the database: database is locked",
            ), checks
            assert checks["storage"] == checks["queue"] == "ok", checks
        finally:
            holder.rollback()
            holder.close()
        checks, _ = _readiness_within(client, 200, 15)
        assert set(checks.values()) == {"ok"}

        # A database file moved away is still open in the server, which would go on writing
        # into it; /readyz names it, and is ready again once the file is back.
        moved = tmp_path / "moved.db"
        database.rename(moved)
        try:
            checks, _ = _readiness_within(client, 503, 15)
            # (Or, once any process opened a new connection meanwhile and so made an empty file
            # at the path, replaced: either way not ready.)
            assert checks["database"] in (
                f"failed: the database file {database} is gone",
                f"failed: the database file {database} was replaced since this process opened it",
            ), checks
        finally:
            moved.rename(database)
        _readiness_within(client, 200, 15)


@pytest.fixture
def read_only_bind() -> Iterator[Callable[[Path], None]]:
    """Makes a folder read-only in place with a read-only bind mount of itself: root ignores
    file modes, not a read-only mount. Undone at the end whatever happens."""
    mounted: list[Path] = []

    def make(folder: Path) -> None:
        subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
        mounted.append(folder)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_readyz_turns_503_when_the_store_cannot_be_written_and_back(
    tmp_path: Path,
    start_server: Callable[..., Server],
    read_only_bind: Callable[[Path], None],
) -> None:
    # API.md: /readyz turns 503 within 15 s of a failure and back within 15 s of recovery.
    data_dir = tmp_path / "data"
    server = start_server(data_dir, "--workers", "1")
    media = data_dir / "media"
    with httpx.Client(base_url=server.base, timeout=30) as client:
        _readiness_within(client, 200, 15)
        # Reads still work on a store remounted read-only (a disk error, a wrong fstab): only
        # a write shows that no upload can be taken.
        read_only_bind(media)
        with pytest.raises(OSError):
            (media / "can-root-write-here").write_bytes(b"no")
        checks, _ = _readiness_within(client, 503, 15)
        assert checks["storage"].startswith("failed:"), checks
        assert "read-only" in checks["storage"].lower(), checks
        assert checks["database"] == checks["queue"] == "ok", checks
        subprocess.run(["umount", str(media)], check=True)
        checks, _ = _readiness_within(client, 200, 15)
        assert set(checks.values()) == {"ok"}, checks
        assert not list((media / "readyz").iterdir()), "a probe object was left behind"

        # A file where the store's folder should be (a botched restore): no write can succeed.
        moved = tmp_path / "media-moved"
        media.rename(moved)
        media.write_bytes(b"not a folder")
        try:
            checks, _ = _readiness_within(client, 503, 15)
            assert checks["storage"].startswith("failed:"), checks
            assert checks["database"] == "ok", checks
        finally:
            media.unlink()
            moved.rename(media)
        _readiness_within(client, 200, 15)
    assert server.stop() == 0


def test_a_worker_started_while_the_database_is_read_only_works_once_it_is_writable(
    tmp_path: Path,
    start_server: Callable[..., Server],
    read_only_bind: Callable[[Path], None],
) -> None:
    # SQLite opens a file it cannot write read-only, and such a connection stays so after the
    # disk is back: the waiting worker must not keep retrying on it (database.py discards it).
    log = tmp_path / "serve.log"
    data_dir = tmp_path / "data"
    server = start_server(data_dir, "--workers", "1", log=log)
    with httpx.Client(base_url=server.base, timeout=30) as client:
        alice = _token(client, "alice")
        read_only_bind(data_dir)
        (first,) = server.worker_processes()
        first.kill()
        first.wait(10)
        _wait_for_start_up_waits(log, 3)
        subprocess.run(["umount", "-l", str(data_dir)], check=True)
        assert _published(client, alice)["status"] == "ready"
        assert "the worker process failed" not in log.read_text()
        assert log.read_text().count("exited with") == 1  # (the one this test killed)
    assert server.stop() == 0
