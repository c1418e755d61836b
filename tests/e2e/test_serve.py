"""`glimpse serve` and `glimpse worker` as real processes, spoken to over real sockets."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

from glimpse.cli import metrics_root
from tests.clips import Clip
from tests.conftest import testdata
from tests.servers import Server, Worker, free_port

StartServer = Callable[..., Server]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def server(data_dir: Path, start_server: StartServer) -> Server:
    return start_server(data_dir, "--workers", "1")


def _sign_up(client: httpx.Client, username: str = "ada") -> dict[str, str]:
    body = {"username": username, "password": "correct horse"}
    assert client.post("/api/v1/accounts", json=body).status_code == 201
    token = client.post("/api/v1/auth/token", json=body).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _publish(client: httpx.Client, headers: dict[str, str], photo: Path, **fields: str) -> str:
    response = client.post(
        "/api/v1/posts",
        headers=headers,
        files=[("file", (photo.name, photo.read_bytes()))],
        data=fields,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _wait_ready(client: httpx.Client, headers: dict[str, str], post_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        post = client.get(f"/api/v1/posts/{post_id}", headers=headers).json()
        if post["status"] != "processing":
            return dict(post)
        time.sleep(0.05)
    raise AssertionError("the post never left processing")


def _raw_get(port: int, target: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_serve_transcodes_a_video_beside_a_photo_and_serves_it_with_ranges(
    server: Server, clips: dict[str, Clip]
) -> None:
    # The API probes the video in a decoding child of its own; a worker process transcodes it
    # in its video lane while its photo lane takes the photo posted after it.
    with httpx.Client(base_url=server.base, timeout=30) as client:
        headers = _sign_up(client)
        video_id = _publish(client, headers, clips["hevc"].path)
        photo_id = _publish(client, headers, testdata("camera/DSCN0010.jpg"))
        assert _wait_ready(client, headers, photo_id)["status"] == "ready"
        post = _wait_ready(client, headers, video_id)
        assert post["status"] == "ready", post
        [media] = post["media"]  # type: ignore[misc]
        assert media["kind"] == "video"
        [mp4] = [v for v in media["variants"] if v["name"] == "mp4_720"]
        part = client.get(mp4["url"], headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and len(part.content) == 100
        assert part.content[4:8] == b"ftyp"


def test_serve_processes_an_upload_and_serves_clean_variants(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=30) as client:
        headers = _sign_up(client)
        # Orientation 6, with GPS tags.
        post_id = _publish(client, headers, testdata("camera/canon_hdr_YES.jpg"), filter="juno")
        post = _wait_ready(client, headers, post_id)
        assert post["status"] == "ready"
        media = post["media"][0]  # type: ignore[index]
        assert media["height"] > media["width"]  # orientation 6: the portrait comes out upright
        for variant in media["variants"]:
            got = client.get(variant["url"])
            assert got.status_code == 200
            assert got.headers["content-type"] == variant["content_type"]
            image = Image.open(io.BytesIO(got.content))
            assert image.size == (variant["width"], variant["height"])
            assert not image.getexif() and "exif" not in image.info  # no GPS, no EXIF at all


def test_the_api_metrics_include_what_the_worker_processes_did(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=30) as client:
        headers = _sign_up(client)
        post_id = _publish(client, headers, testdata("camera/DSCN0010.jpg"))
        assert _wait_ready(client, headers, post_id)["status"] == "ready"
        # Counted in the worker process once the job is settled (a moment after the post
        # turned ready), shown by the API process.
        done = 'glimpse_jobs_run_total{name="process_media",outcome="done"} 1.0'
        deadline = time.monotonic() + 30
        while done not in (metrics := client.get("/metrics").text):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.05)
    assert 'glimpse_job_duration_seconds_count{name="process_media"} 1.0' in metrics


def test_serve_refuses_path_traversal_over_raw_http(server: Server, data_dir: Path) -> None:
    secret = (data_dir / "secret_key").read_text().strip()
    for target in (
        "/media/../glimpse.db",
        "/media/../../data/secret_key",
        "/media/%2e%2e/secret_key",
        "/media/v/..%2f..%2fsecret_key",
        "/media/originals/1/2",
    ):
        answer = _raw_get(server.port, target)
        status = answer.split(b" ", 2)[1]
        assert status in (b"400", b"404"), (target, answer[:200])
        assert secret.encode() not in answer and b"SQLite format" not in answer


def test_serve_answers_413_before_reading_an_oversized_body(
    data_dir: Path, start_server: StartServer
) -> None:
    server = start_server(data_dir, "--no-workers", env={"GLIMPSE_MAX_IMAGE_BYTES": "100000"})
    with httpx.Client(base_url=server.base, timeout=30) as client:
        headers = _sign_up(client)
        big = b"\xff\xd8\xff\xe0" + os.urandom(3_000_000)
        response = client.post("/api/v1/posts", headers=headers, files=[("file", ("big.jpg", big))])
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "file_too_large"
        assert not list((data_dir / "media").rglob("upload-*"))
    assert server.stop() == 0


def test_a_stalled_upload_is_answered_and_its_connection_let_go(
    data_dir: Path, start_server: StartServer
) -> None:
    server = start_server(
        data_dir, "--no-workers", env={"GLIMPSE_UPLOAD_IDLE_TIMEOUT_SECONDS": "1"}
    )
    with httpx.Client(base_url=server.base, timeout=30) as client:
        token = _sign_up(client)["Authorization"]
    part = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        + b"\xff\xd8\xff\xe0"
        + b"\x00" * 100_000
    )
    head = (
        "POST /api/v1/posts HTTP/1.1\r\nHost: glimpse\r\n"
        f"Authorization: {token}\r\n"
        "Content-Type: multipart/form-data; boundary=B\r\n"
        f"Content-Length: {len(part) + 500_000}\r\n\r\n"
    ).encode()
    # The server must close the connection itself, not hold it for the 30 s an error may
    # spend draining a body that is still arriving: the socket gives up before that.
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(head + part)  # ...and then nothing more
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b'"upload_stalled"' in answer
    assert not list((data_dir / "media").rglob("upload-*"))
    assert server.stop() == 0


def test_queued_work_survives_a_restart_and_a_separate_worker_finishes_it(
    data_dir: Path, start_server: StartServer, start_worker: Callable[..., Worker]
) -> None:
    # The API alone accepts the upload; nothing processes it before the server goes away.
    server = start_server(data_dir, "--no-workers")
    with httpx.Client(base_url=server.base, timeout=30) as client:
        headers = _sign_up(client)
        post_id = _publish(client, headers, testdata("orientation/Landscape_3.jpg"))
    metrics = metrics_root(data_dir)
    assert not metrics.is_relative_to(data_dir)  # in memory, off the data disk
    assert [p.name for p in metrics.iterdir()] != []  # this serve's, while it runs
    assert server.stop() == 0
    assert list(metrics.iterdir()) == []  # a clean stop takes its metrics along
    worker = start_worker(data_dir)
    server = start_server(data_dir, "--no-workers")
    with httpx.Client(base_url=server.base, timeout=30) as client:
        post = _wait_ready(client, headers, post_id)
    assert post["status"] == "ready"
    assert server.stop() == 0
    assert worker.stop() == 0


def test_workers_stop_by_themselves_when_serve_is_killed_outright(
    data_dir: Path, start_server: StartServer
) -> None:
    server = start_server(data_dir, "--workers", "1")
    workers = server.worker_processes()
    assert len(workers) == 1
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)
    _, alive = psutil.wait_procs(workers, timeout=15)
    for orphan in alive:
        orphan.kill()
    assert not alive, "a worker ran on after its glimpse serve was killed"


def test_an_unusable_metrics_folder_costs_only_the_shared_metrics(
    data_dir: Path, tmp_path: Path, start_server: StartServer
) -> None:
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    server = start_server(
        data_dir, "--no-workers", env={"PROMETHEUS_MULTIPROC_DIR": str(not_a_folder / "metrics")}
    )
    with httpx.Client(base_url=server.base, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/metrics")
        assert response.status_code == 200
        assert "glimpse_http_requests_total" in response.text
    assert server.stop() == 0


def test_a_second_serve_on_a_taken_port_stops_before_touching_the_data_folder(
    server: Server, data_dir: Path, tmp_path: Path
) -> None:
    # It used to migrate the database, start its worker processes (which took jobs), lease an
    # id node and run the app's start-up, and only then find that it could not listen.
    def second(folder: Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "glimpse.cli", "serve", "--data-dir", str(folder)]
        command += ["--host", "127.0.0.1", "--port", str(server.port), "--workers", "1"]
        env = {**os.environ, "GLIMPSE_LOG_LEVEL": "INFO", "GLIMPSE_LOG_FORMAT": "text"}
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    same = second(data_dir)
    assert same.returncode == 1, same.stderr
    assert f"127.0.0.1:{server.port}" in same.stderr, same.stderr
    assert "startup" not in same.stderr and "alembic" not in same.stderr, same.stderr
    fresh = tmp_path / "fresh"
    assert second(fresh).returncode == 1
    assert not fresh.exists()  # nothing made: no database, no secret key, no media folder
    with httpx.Client(base_url=server.base, timeout=30) as client:
        assert client.get("/readyz").status_code == 200
    assert server.stop() == 0


def test_host_port_and_workers_come_from_their_variables(
    data_dir: Path, start_server: StartServer
) -> None:
    # 127.0.0.2 is loopback too, and no default: the server answering there listened where
    # GLIMPSE_HOST and GLIMPSE_PORT said.
    # One more worker than cores, so that the default could not give the same count.
    count = (os.cpu_count() or 1) + 1
    server = start_server(
        data_dir, host="127.0.0.2", via_env=True, env={"GLIMPSE_WORKERS": str(count)}
    )
    assert len(server.worker_processes()) == count
    assert server.stop() == 0


def test_flags_win_over_the_variables(
    data_dir: Path, tmp_path: Path, start_server: StartServer
) -> None:
    elsewhere = free_port()
    server = start_server(
        data_dir,
        "--workers",
        "1",
        env={"GLIMPSE_HOST": "127.0.0.2", "GLIMPSE_PORT": str(elsewhere), "GLIMPSE_WORKERS": "2"},
    )
    assert httpx.get(f"{server.base}/healthz").status_code == 200  # where --host/--port said
    assert len(server.worker_processes()) == 1
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.2:{elsewhere}/healthz")
    no_workers = start_server(tmp_path / "other", "--no-workers", env={"GLIMPSE_WORKERS": "2"})
    assert no_workers.worker_processes() == []
    assert server.stop() == 0
    assert no_workers.stop() == 0


def test_serve_logs_json_lines_that_follow_a_request_into_its_job(
    data_dir: Path, start_server: StartServer, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    server = start_server(
        data_dir,
        "--workers",
        "1",
        env={"GLIMPSE_LOG_FORMAT": "json", "GLIMPSE_LOG_LEVEL": "INFO"},
        log=log,
    )
    with httpx.Client(base_url=server.base) as client:
        headers = _sign_up(client)
        photo = testdata("camera/DSCN0010.jpg")
        response = client.post(
            "/api/v1/posts", headers=headers, files=[("file", (photo.name, photo.read_bytes()))]
        )
        assert response.status_code == 202, response.text
        request_id = response.headers["x-request-id"]
        assert _wait_ready(client, headers, str(response.json()["id"]))["status"] == "ready"
    assert server.stop() == 0
    lines = [json.loads(text) for text in log.read_text().splitlines() if text.strip()]
    by_logger = {line["logger"] for line in lines}
    # uvicorn's own lines in the same format, and no access log of its own (it names raw paths).
    assert "uvicorn.error" in by_logger and "uvicorn.access" not in by_logger
    [upload_line] = [
        line for line in lines if line["logger"] == "glimpse.access" and line["status"] == 202
    ]
    assert upload_line["request_id"] == request_id
    assert (upload_line["method"], upload_line["route"]) == ("POST", "/api/v1/posts")
    assert upload_line["bytes_in"] > photo.stat().st_size and upload_line["user_id"]
    job_lines = [line for line in lines if line.get("kind") == "process_media"]
    assert [(j["request_id"], j["outcome"]) for j in job_lines] == [(request_id, "done")]
    assert job_lines[0]["pid"] != upload_line["pid"]  # written by the worker process


def _scrape(url: str, **headers: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(url, headers=headers, timeout=2)
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_worker_alone_serves_its_own_metrics(
    data_dir: Path, start_server: StartServer, start_worker: Callable[..., Worker]
) -> None:
    # A worker on another host has no API beside it: it is scraped on its own port, with the
    # jobs it ran and the queue as it sees it.
    server = start_server(data_dir, "--no-workers")
    with httpx.Client(base_url=server.base, timeout=30) as client:
        headers = _sign_up(client)
        post_id = _publish(client, headers, testdata("orientation/Landscape_3.jpg"))
        port = free_port()
        start_worker(
            data_dir,
            {"GLIMPSE_WORKER_METRICS_PORT": str(port), "GLIMPSE_METRICS_TOKEN": "scrape-me"},
        )
        _wait_ready(client, headers, post_id)
    url = f"http://127.0.0.1:{port}/metrics"
    assert _scrape(url).status_code == 401
    text = _scrape(url, Authorization="Bearer scrape-me").text
    assert 'glimpse_jobs_run_total{name="process_media",outcome="done"} 1.0' in text
    assert 'glimpse_jobs{state="queued"}' in text
    assert "glimpse_jobs_oldest_due_age_seconds" in text
