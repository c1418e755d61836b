"""A worker killed in the middle of a job loses nothing: another worker finishes the work once
the dead one's lease runs out."""

from __future__ import annotations

import io
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from PIL import Image

from tests.e2e.test_serve import _sign_up, _wait_ready
from tests.servers import Server, Worker

LEASE_SECONDS = "2"


def _slow_photo() -> bytes:
    # A 49 MP PNG: no reduced-size decode exists for PNG, so processing takes most of a
    # second, a wide window in which to kill the worker.
    image = Image.linear_gradient("L").resize((7000, 7000)).convert("RGB")
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _job_states(data_dir: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(data_dir / "glimpse.db") as db:
        return list(
            db.execute(
                "SELECT name, state, attempts FROM jobs WHERE name = 'process_media'"
            ).fetchall()
        )


def test_a_worker_killed_mid_job_leaves_work_another_worker_finishes(
    tmp_path: Path,
    start_server: Callable[..., Server],
    start_worker: Callable[..., Worker],
) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir, "--no-workers")
    lease = {"GLIMPSE_JOB_LEASE_SECONDS": LEASE_SECONDS}
    with httpx.Client(base_url=server.base, timeout=60) as client:
        headers = _sign_up(client)
        response = client.post(
            "/api/v1/posts", headers=headers, files=[("file", ("big.png", _slow_photo()))]
        )
        assert response.status_code == 202, response.text
        post_id = response.json()["id"]

        doomed = start_worker(data_dir, lease)
        deadline = time.monotonic() + 30
        while _job_states(data_dir) != [("process_media", "running", 1)]:
            assert time.monotonic() < deadline, _job_states(data_dir)
            time.sleep(0.005)
        doomed.process.send_signal(signal.SIGKILL)  # no chance to finish or clean up
        doomed.process.wait(timeout=10)
        post = client.get(f"/api/v1/posts/{post_id}", headers=headers).json()
        assert post["status"] == "processing"  # the kill came before the work was stored

        survivor = start_worker(data_dir, lease)
        post = _wait_ready(client, headers, post_id)
        assert survivor.stop() == 0
    assert post["status"] == "ready"
    assert all(v["width"] > 0 for m in post["media"] for v in m["variants"])  # type: ignore[index]
    assert _job_states(data_dir) == []  # done, not dead
    assert server.stop() == 0
