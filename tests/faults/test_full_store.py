"""A full disk (the embedded default) and a full bucket (the scale stack), with posts in flight:
while the store is full, uploads get 503 with Retry-After, nothing gets another 5xx, reads and
the media of earlier posts still work, no process dies; once there is room again, every post
acknowledged before or during the fault is processed and in the feed once.

The disk is a real tmpfs, filled with a file (root only, as CI runs; tests/e2e/test_full_disk.py
fills one under every kind of route). The full bucket is a stand-in: a proxy in front of the S3
test server that answers every write (PUT, POST but a multi-delete) as MinIO answers when its
disk is full, 507 `XMinioStorageFull` (tests/full_bucket.py; the default run's
tests/api/test_full_bucket.py uses it too); moto has no quotas and AWS no full buckets.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import (
    Stack,
    Tally,
    count_outcomes,
    post_photo,
    settled_posts,
    sign_up,
    times,
)
from tests.full_bucket import FullableBucketProxy
from tests.servers import Server, Worker

ROUNDS = times("full_store_rounds", 2)
# Storage faults are retried at most this far apart: work resumes this soon after room returns.
FAST_STORAGE_RETRIES = {"GLIMPSE_STORAGE_RETRY_MAX_DELAY_SECONDS": "1"}


@pytest.fixture
def full_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Stack, dict[str, object]]]:
    kind = request.param
    if kind == "embedded":
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a tmpfs needs root")
        disk = tmp_path / "disk"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], check=True)
        stack: Stack = request.getfixturevalue("embedded_stack")
        stack.root = disk
        stack.env.update(FAST_STORAGE_RETRIES, GLIMPSE_STORAGE_FREE_BYTES_FLOOR="0")
        filler = disk / "filler"

        def fill() -> None:
            with filler.open("wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()

        try:
            yield stack, {"fill": fill, "empty": lambda: filler.unlink()}
        finally:
            subprocess.run(["umount", "-l", str(disk)], check=False)
        return
    stack = request.getfixturevalue("scale_stack")
    assert stack.storage_url is not None
    bucket, _, query = stack.storage_url.removeprefix("s3://").partition("?endpoint=")
    proxy = FullableBucketProxy(query)
    stack.storage_url = f"s3://{bucket}?endpoint={proxy.endpoint}"
    stack.env.update(FAST_STORAGE_RETRIES, GLIMPSE_STORAGE_URL=stack.storage_url)

    def set_full(value: bool) -> None:
        proxy.full = value

    try:
        yield (
            stack,
            {
                "fill": lambda: set_full(True),
                "empty": lambda: set_full(False),
                "refused": lambda: proxy.refused,
            },
        )
    finally:
        proxy.close()


@pytest.mark.parametrize("full_store", ["embedded", "scale"], indirect=True)
def test_a_full_disk_and_a_full_bucket(
    full_store: tuple[Stack, dict[str, object]],
    processes: list[Server | Worker],
    tally: Tally,
) -> None:
    stack, control = full_store
    fill, empty = control["fill"], control["empty"]
    assert callable(fill) and callable(empty)
    tally.stack = stack.name
    server = stack.server()
    processes += [server, stack.worker(0)]
    acknowledged: list[str] = []
    with httpx.Client(base_url=server.base, timeout=60) as client:
        alice, bob = sign_up(client, "alice"), sign_up(client, "bob")
        assert client.post("/api/v1/users/alice/follow", headers=bob).status_code == 200
        seed = 0

        def upload() -> httpx.Response:
            nonlocal seed
            seed += 1
            response = post_photo(client, alice, seed)
            if response.status_code == 202:
                acknowledged.append(response.json()["id"])
            return response

        assert upload().status_code == 202
        earlier = settled_posts(client, alice, acknowledged)[acknowledged[0]]
        variant_url = earlier["media"][0]["variants"][0]["url"]
        for _ in range(ROUNDS):
            assert upload().status_code == 202  # in flight when the store fills
            fill()
            tally.injected += 1
            answers: list[httpx.Response] = []
            for _ in range(3):
                answers.append(upload())
                answers.append(client.get("/api/v1/feed", headers=bob))
                answers.append(client.get("/api/v1/users/alice", headers=bob))
                answers.append(client.get(variant_url))
                answers.append(client.post(f"/api/v1/posts/{acknowledged[0]}/like", headers=bob))
            for response in answers:
                tally.add("requests")
                status = response.status_code
                if status == 503:
                    tally.add("answered_503")
                    tally.add("503_without_retry_after", not response.headers.get("Retry-After"))
                elif status >= 500:
                    tally.add("server_errors")
            reads = [r for r in answers if r.request.method == "GET"]
            tally.add("reads_failed", sum(r.status_code != 200 for r in reads))
            empty()
        refused = control.get("refused")
        if callable(refused):  # (the bucket's writes answered 507 while full)
            tally.add("writes_refused_507", refused())
        tally.add("processes_died", sum(p.process.poll() is not None for p in processes))
        count_outcomes(tally, client, alice, bob, acknowledged)
    counts = tally.counts
    assert counts.get("answered_503", 0) > 0, "the store never looked full"
    for what in (
        "503_without_retry_after", "server_errors", "processes_died", "lost", "failed",
        "duplicated_variants", "incomplete_variants", "missing_from_feed",
        "duplicated_feed_entries",
    ):  # fmt: skip
        assert counts.get(what, 0) == 0, counts
    if stack.name == "scale":
        # (on a full disk, an embedded write may fail at the database before it reaches it)
        assert counts.get("reads_failed", 0) == 0, counts
