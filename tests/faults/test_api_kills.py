"""SIGKILL the API in the middle of uploads, again and again, on the embedded default and on the
scale stack. Every upload it acknowledged (202) is processed; after a restart and the collector
(the hourly sweep's code, run at once), the store holds no file that no row records, staging
holds nothing, and no row is half-written: every post has its media, every media row its
original, none stays `processing`.

(A SIGTERM in the middle of an upload, which must finish it or refuse it, is
tests/e2e/test_sigterm_upload.py.)
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.faults.conftest import (
    Stack,
    Tally,
    count_outcomes,
    photo,
    sign_up,
    times,
    wait_for,
)
from tests.servers import Server, Worker

KILLS = times("api_kills", 3)
UPLOADERS = 4  # uploads in flight at each kill


def _dribbled(body: bytes, rng: random.Random) -> Iterator[bytes]:
    # A phone on a slow link: the body arrives over about a second, so a kill lands inside it.
    step = max(1, len(body) // 20)
    for start in range(0, len(body), step):
        yield body[start : start + step]
        time.sleep(rng.uniform(0.01, 0.08))


def _uploads(
    base: str, headers: dict[str, str], seeds: list[int], acknowledged: list[str], tally: Tally
) -> None:
    rng = random.Random(seeds[0])
    with httpx.Client(base_url=base, timeout=30) as client:
        for n, seed in enumerate(seeds):
            request = client.build_request(
                "POST",
                "/api/v1/posts",
                headers=headers,
                files=[("file", (f"{seed}.jpg", photo(seed)))],
            )
            body = request.read()
            # The first at full speed (it is answered before the kill), the others slowly.
            content = _dribbled(body, rng) if n else body
            try:
                response = client.post(
                    "/api/v1/posts",
                    headers={**headers, "Content-Type": request.headers["Content-Type"]},
                    content=content,
                )
            except httpx.HTTPError:
                tally.add("uploads_cut_off")
                return  # the server is gone
            if response.status_code == 202:
                acknowledged.append(response.json()["id"])
            else:
                tally.add(f"answered_{response.status_code}")


def test_sigkill_the_api_mid_upload(
    stack: Stack, processes: list[Server | Worker], tally: Tally
) -> None:
    rng = random.Random(2)
    server = stack.server()
    processes.append(server)
    with httpx.Client(base_url=server.base, timeout=60) as client:
        alice, bob = sign_up(client, "alice"), sign_up(client, "bob")
        assert client.post("/api/v1/users/alice/follow", headers=bob).status_code == 200
    worker = stack.worker(0)
    processes.append(worker)
    acknowledged: list[str] = []
    seed = 0
    for _ in range(KILLS):
        threads = []
        for _ in range(UPLOADERS):
            seeds = list(range(seed, seed + 3))
            seed += 3
            threads.append(
                threading.Thread(
                    target=_uploads, args=(server.base, alice, seeds, acknowledged, tally)
                )
            )
        for thread in threads:
            thread.start()
        # Once this round's first uploads are answered, while the others are on their way.
        answered = len(acknowledged)
        wait_for(
            lambda seen=answered: len(acknowledged) > seen, lambda: "no upload was answered", 60
        )
        time.sleep(rng.uniform(0.0, 1.0))
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        tally.injected += 1
        for thread in threads:
            thread.join(60)
        server = stack.server()
        processes.append(server)
    tally.add("uploads_sent", seed)

    with httpx.Client(base_url=server.base, timeout=60) as client:
        count_outcomes(tally, client, alice, bob, acknowledged)
        # (and the posts committed whose answer the kill cut off)
        wait_for(
            lambda: not stack.scalar("SELECT count(*) FROM posts WHERE status = 'processing'"),
            lambda: "posts stuck in processing",
        )
        assert worker.stop() == 0
        assert server.stop() == 0
    tally.add("orphan_files_before_collector", len(stack.stored_keys() - stack.recorded_keys()))
    tally.add("staged_files_before_collector", len(stack.staged_files()))
    # Every upload is answered, every server stopped: the collector may run.
    subprocess.run(
        [sys.executable, "-m", "tests.faults.collector", str(stack.api_dir)],
        env={**os.environ, **stack.env},
        cwd=Path(__file__).parents[2],
        check=True,
        timeout=120,
    )
    recorded, stored = stack.recorded_keys(), stack.stored_keys()
    tally.add("orphan_files", len(stored - recorded))
    tally.add("missing_files", len(recorded - stored))
    tally.add("staged_files_left", len(stack.staged_files()))
    tally.add("posts_without_media", stack.scalar(
        "SELECT count(*) FROM posts WHERE NOT EXISTS"
        " (SELECT 1 FROM media WHERE media.post_id = posts.id)"
    ))  # fmt: skip
    tally.add("stuck_processing", stack.scalar(
        "SELECT count(*) FROM posts WHERE status != 'ready'"
    ))  # fmt: skip
    # A post committed just before the kill whose 202 never reached the client is whole (the
    # checks above), not half-written: counted, allowed.
    tally.add(
        "committed_unanswered", stack.scalar("SELECT count(*) FROM posts") - len(acknowledged)
    )
    counts = tally.counts
    assert counts.get("uploads_cut_off", 0) > 0, "no kill landed inside an upload"
    assert counts["acknowledged"] > 0, counts
    for bad in (
        "lost", "failed", "duplicated_variants", "incomplete_variants", "missing_from_feed",
        "duplicated_feed_entries", "orphan_files", "missing_files", "staged_files_left",
        "posts_without_media", "stuck_processing",
    ):  # fmt: skip
        assert counts[bad] == 0, counts
