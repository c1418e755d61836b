"""The shipped nginx edge (`glimpse edge-config`) in front of `glimpse serve`, both real
processes on loopback ports. Whether nginx or the origin answered is told by counting the
origin's media requests in its /metrics."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from tests.edges import Edge
from tests.malformed_http import MALFORMED, exchange
from tests.servers import Server

# Small, so that the bound on serving deleted media is seconds: the edge keeps a public
# variant this long, the origin its verdict this long.
EDGE_SECONDS = 2
ORIGIN_TTL_SECONDS = 1
HEADER_TIMEOUT_SECONDS = 2
SETTINGS = {
    "GLIMPSE_EDGE_CACHE_SECONDS": str(EDGE_SECONDS),
    "GLIMPSE_ORIGIN_CACHE_TTL_SECONDS": str(ORIGIN_TTL_SECONDS),
    "GLIMPSE_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_SECONDS),
    "GLIMPSE_TRUSTED_PROXY_HOPS": "1",
    "GLIMPSE_MEDIA_GC_DELAY_SECONDS": "1",
}
_MEDIA_COUNT = re.compile(
    r'^glimpse_http_requests_total\{[^\n]*route="/media/\{key:path\}"[^\n]*\} ([0-9.e+]+)$', re.M
)


@dataclass
class Stack:
    origin: Server
    edge: Edge

    def origin_media_requests(self) -> int:
        """Media requests the origin has answered, whatever their status."""
        text = httpx.get(f"{self.origin.base}/metrics", timeout=10).text
        return sum(int(float(count)) for count in _MEDIA_COUNT.findall(text))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("edge")
    origin = Server(root / "data", "--workers", "1", env=SETTINGS)
    try:
        (root / "cache").mkdir()
        edge = Edge(root / "cache", origin.base, SETTINGS)
        try:
            yield Stack(origin, edge)
        finally:
            edge.close()
    finally:
        origin.close()


def _sign_up(client: httpx.Client, username: str) -> dict[str, str]:
    body = {"username": username, "password": "correct horse"}
    assert client.post("/api/v1/accounts", json=body).status_code == 201
    token = client.post("/api/v1/auth/token", json=body).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _photo() -> bytes:
    """A photo no other post has (media keys are content addresses: the same photo posted
    twice is one key, public if either post is)."""
    small = Image.frombytes("RGB", (40, 30), os.urandom(40 * 30 * 3))
    out = io.BytesIO()
    small.resize((1200, 900), Image.Resampling.BILINEAR).save(out, "JPEG", quality=90)
    return out.getvalue()


def _publish(client: httpx.Client, headers: dict[str, str]) -> dict[str, object]:
    response = client.post(
        "/api/v1/posts", headers=headers, files=[("file", ("photo.jpg", _photo()))]
    )
    assert response.status_code == 202, response.text
    post_id = response.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        post = client.get(f"/api/v1/posts/{post_id}", headers=headers).json()
        if post["status"] == "ready":
            return dict(post)
        assert post["status"] == "processing", post
        time.sleep(0.05)
    raise AssertionError("the post never became ready")


def _variant_url(post: dict[str, object], name: str = "w1080") -> str:
    """The variant's URL as the post shows it, without scheme and host (the edge's are ours)."""
    [media] = post["media"]  # type: ignore[misc]
    [variant] = [
        v for v in media["variants"] if v["name"] == name and v["content_type"] == "image/jpeg"
    ]
    parts = urlsplit(variant["url"])
    return parts.path + (f"?{parts.query}" if parts.query else "")


# What must be the same whether the origin or the edge's cache answered.
_KEPT_HEADERS = ("content-type", "content-length", "etag", "cache-control", "accept-ranges")


def test_a_public_variant_is_answered_by_the_edge_the_second_time(stack: Stack) -> None:
    with httpx.Client(base_url=stack.edge.base, timeout=30) as client:
        post = _publish(client, _sign_up(client, "ada"))
        url = _variant_url(post)
        assert "?" not in url  # public: a plain URL
        before = stack.origin_media_requests()
        first = client.get(url)
        second = client.get(url)
        assert first.status_code == second.status_code == 200
        assert stack.origin_media_requests() == before + 1  # the origin was asked once
        assert first.headers["x-edge-cache"] == "MISS"
        assert second.headers["x-edge-cache"] == "HIT"
        assert second.content == first.content
        for name in _KEPT_HEADERS:
            assert second.headers[name] == first.headers[name], name
        assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert second.headers["x-content-type-options"] == "nosniff"
        # The edge's own validity is between nginx and the origin.
        assert "x-accel-expires" not in first.headers and "x-accel-expires" not in second.headers
        # Each answer its own request id, even from the cache.
        assert first.headers["x-request-id"] != second.headers["x-request-id"]

        # 304 and 206 from the cache: the origin is not asked.
        etag = first.headers["etag"]
        not_modified = client.get(url, headers={"If-None-Match": etag})
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert not_modified.headers["etag"] == etag
        part = client.get(url, headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 100-1099/{len(first.content)}"
        assert part.content == first.content[100:1100]
        tail = client.get(url, headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == first.content[-10:]
        head = client.head(url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(first.content))
        assert stack.origin_media_requests() == before + 1


def test_a_range_on_the_first_request_is_a_206(stack: Stack) -> None:
    with httpx.Client(base_url=stack.edge.base, timeout=30) as client:
        post = _publish(client, _sign_up(client, "bea"))
        url = _variant_url(post, "w640")
        part = client.get(url, headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and len(part.content) == 100
        whole = client.get(url)
        assert whole.headers["x-edge-cache"] == "HIT"
        assert part.content == whole.content[:100]


def test_private_media_needs_its_signature_and_is_never_cached(stack: Stack) -> None:
    with httpx.Client(base_url=stack.edge.base, timeout=30) as client:
        headers = _sign_up(client, "cal")
        assert client.patch("/api/v1/me", headers=headers, json={"is_private": True}).is_success
        post = _publish(client, headers)
        signed = _variant_url(post)
        plain = signed.split("?", 1)[0]
        assert signed != plain
        before = stack.origin_media_requests()
        for _ in range(3):
            answer = client.get(signed)
            assert answer.status_code == 200
            assert answer.headers["cache-control"] == "private, no-cache"
            assert answer.headers["x-edge-cache"] == "BYPASS"
        assert stack.origin_media_requests() == before + 3  # each one asked the origin
        # Without the signature, or with a forged one: 404, and nothing from the cache.
        forged = re.sub(r"sig=[^&]+", "sig=" + "A" * 43, signed)
        for url in (plain, plain, forged):
            refused = client.get(url)
            assert refused.status_code == 404
            assert refused.headers["x-edge-cache"] in ("MISS", "BYPASS")
            assert refused.content.startswith(b'{"error"')
        assert stack.origin_media_requests() == before + 6
        files = [p for p in (stack.edge.cache_dir / "media").rglob("*") if p.is_file()]
        middle = len(answer.content) // 2  # (the start of a JPEG is the same in every one)
        assert not any(answer.content[middle : middle + 64] in p.read_bytes() for p in files)


def test_deleted_or_private_media_leaves_the_edge_within_the_bound(stack: Stack) -> None:
    bound = EDGE_SECONDS + ORIGIN_TTL_SECONDS
    with httpx.Client(base_url=stack.edge.base, timeout=30) as client:
        deleted_by = _sign_up(client, "dee")
        deleted = _variant_url(_publish(client, deleted_by))
        hidden_by = _sign_up(client, "eve")
        hidden_post = _publish(client, hidden_by)
        hidden = _variant_url(hidden_post)
        for url in (deleted, hidden):
            assert client.get(url).status_code == 200
            assert client.get(url).headers["x-edge-cache"] == "HIT"
        post_id = _variant_owner_id(client, deleted_by)
        assert client.delete(f"/api/v1/posts/{post_id}", headers=deleted_by).status_code == 204
        assert client.patch("/api/v1/me", headers=hidden_by, json={"is_private": True}).is_success
        changed = time.monotonic()
        # Polled for twice the bound and more: the assertion is that it ends, not how fast.
        gone: dict[str, float] = {}
        while len(gone) < 2 and time.monotonic() < changed + 2 * bound + 10:
            for url in (deleted, hidden):
                if url not in gone and client.get(url).status_code == 404:
                    gone[url] = time.monotonic() - changed
            time.sleep(0.1)
        assert set(gone) == {deleted, hidden}, gone
        # ...and stays gone: the 404 is not cached as a success, nor the old file served again.
        for url in (deleted, hidden):
            assert client.get(url).status_code == 404
        # The owner of the now-private account still sees the photo through a signed URL.
        post = client.get(f"/api/v1/posts/{hidden_post['id']}", headers=hidden_by).json()
        assert client.get(_variant_url(post)).status_code == 200


def _variant_owner_id(client: httpx.Client, headers: dict[str, str]) -> str:
    me = client.get("/api/v1/me", headers=headers).json()
    page = client.get(f"/api/v1/users/{me['username']}/posts", headers=headers).json()
    return str(page["items"][0]["id"])


def test_the_api_is_proxied_with_the_edge_request_id(stack: Stack) -> None:
    with httpx.Client(base_url=stack.edge.base, timeout=30) as client:
        answer = client.get("/healthz", headers={"X-Request-ID": "forged-by-the-client"})
        assert answer.status_code == 200
        # nginx's own id replaces the client's, and the origin (which trusts its proxy) uses it.
        request_id = answer.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
        log = stack.edge.cache_dir / "access.log"
        deadline = time.monotonic() + 10
        while f"id={request_id}" not in log.read_text():
            assert time.monotonic() < deadline, "nginx never logged the request"
            time.sleep(0.2)


def test_a_client_that_trickles_its_headers_is_cut_by_the_edge(stack: Stack) -> None:
    with socket.create_connection(("127.0.0.1", stack.edge.port), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        received = b""
        closed = False
        while time.monotonic() - started < 30:
            try:
                s.sendall(b"X")  # one byte of a header line, never finished
                chunk = s.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            except TimeoutError:
                continue
            if not chunk:
                closed = True
                break
            received += chunk
        assert closed, "nginx kept a connection whose headers never ended"
        assert b"200 OK" not in received


def test_the_cache_folder_holds_everything_nginx_writes(stack: Stack) -> None:
    cache: Path = stack.edge.cache_dir
    assert (cache / "nginx.pid").read_text().strip().isdigit()
    assert (cache / "error.log").exists() and (cache / "access.log").exists()
    assert any(p.is_file() for p in (cache / "media").rglob("*"))


def test_the_edge_terminates_tls(stack: Stack, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert),
        ],
        capture_output=True,
        check=True,
    )  # fmt: skip
    (tmp_path / "cache").mkdir()
    edge = Edge(tmp_path / "cache", stack.origin.base, SETTINGS, tls=(cert, key))
    try:
        assert edge.base.startswith("https://")
        with httpx.Client(base_url=edge.base, verify=False, timeout=30) as client:
            answer = client.get("/healthz")
            assert answer.status_code == 200 and answer.json()["status"] == "ok"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{edge.port}/healthz", timeout=5).raise_for_status()
    finally:
        edge.close()


def test_what_is_not_http_is_refused_by_the_edge_in_the_api_error_shape(stack: Stack) -> None:
    # nginx's own refusals were its HTML pages, and a request line it could not read, sent to
    # a named error location, a 500.
    too_long = {
        "a URL past nginx's buffers": (
            b"GET /media/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: glimpse.test\r\n\r\n",
            414,
            "uri_too_long",
        ),
        "a header past nginx's buffers": (
            b"GET /healthz HTTP/1.1\r\nHost: glimpse.test\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
            431,
            "headers_too_large",
        ),
    }
    cases = {k: (v, 400, "bad_request") for k, v in MALFORMED.items()} | too_long
    for what, (request, expected, code) in cases.items():
        status, headers, body = exchange(stack.edge.port, request)
        assert (status, body["error"]["code"]) == (expected, code), what
        assert headers["content-type"] == "application/json", what
        assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"]), what
    with httpx.Client(base_url=stack.edge.base, timeout=30) as client:
        assert client.get("/.glimpse-edge/bad-request").status_code == 404  # internal only
        assert client.get("/healthz").status_code == 200
