"""SIGTERM reaching `glimpse serve` while an upload's body is still arriving: the upload either
finishes (202, and the post gets ready once a worker runs again) or is refused cleanly, and the
database holds no half-written post either way (issue 18, item 4)."""

from __future__ import annotations

import io
import random
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.test_hostile_clients import read_response
from tests.servers import Server

ENV = {"GLIMPSE_SHUTDOWN_GRACE_SECONDS": "20"}


def _noisy_jpeg() -> bytes:
    # Noise does not compress: about a megabyte, so the body takes several writes to send.
    rng = random.Random(18)
    image = Image.frombytes("RGB", (900, 700), rng.randbytes(900 * 700 * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def _upload_request(token: str, jpeg: bytes) -> bytes:
    boundary = uuid.uuid4().hex
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="caption"\r\n\r\nsent through a SIGTERM\r\n'
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="noise.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + jpeg
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        "POST /api/v1/posts HTTP/1.1\r\nHost: glimpse.test\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + body


def _posts_in_database(data_dir: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(data_dir / "glimpse.db") as db:
        return [(str(i), s) for i, s in db.execute("select id, status from posts")]


@pytest.mark.parametrize(
    "grace",
    [
        "20",  # time enough: the upload finishes
        "1",  # the upload outlasts the grace: refused with a 503, never a 500
    ],
)
def test_sigterm_during_an_upload_finishes_it_or_refuses_it_and_never_half_writes(
    tmp_path: Path, start_server: Callable[..., Server], grace: str
) -> None:
    data_dir = tmp_path / "data"
    env = {"GLIMPSE_SHUTDOWN_GRACE_SECONDS": grace}
    server = start_server(data_dir, "--workers", "1", env=env)
    body = {"username": "ana", "password": "correct horse"}
    with httpx.Client(base_url=server.base, timeout=30) as client:
        assert client.post("/api/v1/accounts", json=body).status_code == 201
        token = client.post("/api/v1/auth/token", json=body).json()["access_token"]

    request = _upload_request(token, _noisy_jpeg())
    half = len(request) // 2
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request[:half])
        time.sleep(0.5)  # the server is reading the body now
        server.process.send_signal(15)  # SIGTERM
        time.sleep(0.5 if grace == "20" else 3)  # past the grace: the server cuts it off
        try:
            if grace == "20":
                sock.sendall(request[half:])
            status, _, answer = read_response(sock, timeout=30)
        except (ConnectionError, AssertionError):
            status, answer = 0, b""  # refused: the connection was closed without an answer
    assert server.process.wait(timeout=60) == 0
    posts = _posts_in_database(data_dir)
    if status == 202:
        accepted = httpx.Response(202, content=answer).json()["id"]
        assert [p[0] for p in posts] == [str(accepted)], posts
    else:
        # Cleanly refused: a 503 with Retry-After, or no answer at all; nothing was kept.
        assert status in (0, 503), (status, answer[:300])
        if grace == "1":
            assert status == 503, answer[:300]
        assert posts == [], posts
    print(f"\nSIGTERM mid-upload: answered {status}; posts in the database: {posts}")

    # Started again, the server finishes what it accepted: a post gets ready, none is stuck.
    server = start_server(data_dir, "--workers", "1", env=ENV)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.base, timeout=30, headers=headers) as client:
        deadline = time.monotonic() + 60
        for post_id, _ in posts:
            while (post := client.get(f"/api/v1/posts/{post_id}").json())["status"] != "ready":
                assert post["status"] == "processing", post
                assert time.monotonic() < deadline, post
                time.sleep(0.3)
            assert post["caption"] == "sent through a SIGTERM"
            assert len(post["media"]) == 1
        items = client.get("/api/v1/users/ana/posts").json()["items"]
        assert sorted(item["id"] for item in items) == sorted(p[0] for p in posts)
    assert server.stop() == 0
