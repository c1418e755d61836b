"""pg_terminate_backend on every connection the API and the worker hold to PostgreSQL, again and
again, while clients upload, like and comment: no request gets a 5xx other than a 503 with
Retry-After, every write that was answered 2xx is there afterwards (posts processed, likes and
comments counted once), and the processes go on without a restart.

Each termination is counted as landing mid-transaction when the backend it ended was running a
statement or inside a transaction (`pg_stat_activity.state`)."""

from __future__ import annotations

import random
import threading
import time

import asyncpg
import httpx

from tests.databases import ADMIN_URL, run_sync
from tests.faults.conftest import (
    Stack,
    Tally,
    count_outcomes,
    post_photo,
    sign_up,
    times,
)
from tests.servers import Server, Worker

ROUNDS = times("postgres_terminations", 8)


async def _terminate(database: str) -> tuple[int, int]:
    """End every backend of `database` but our own: (how many, how many mid-transaction)."""
    connection = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT pg_terminate_backend(pid) AS ended, state FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await connection.close()
    ended = [r for r in rows if r["ended"]]
    busy = [r for r in ended if r["state"] in ("active", "idle in transaction")]
    return len(ended), len(busy)


def test_terminate_the_postgres_connections_mid_transaction(
    scale_stack: Stack, processes: list[Server | Worker], tally: Tally
) -> None:
    assert scale_stack.database_url is not None
    database = scale_stack.database_url.rsplit("/", 1)[1]
    rng = random.Random(5)
    server = scale_stack.server()
    processes += [server, scale_stack.worker(0)]
    stop = threading.Event()
    acknowledged: list[str] = []
    likes: dict[str, set[str]] = {}
    comments: dict[str, int] = {}
    answers: dict[int, int] = {}
    bad: list[str] = []

    with httpx.Client(base_url=server.base, timeout=60) as client:
        alice = sign_up(client, "alice")
        fans = {name: sign_up(client, name) for name in ("bob", "carol", "dan")}
        for headers in fans.values():
            assert client.post("/api/v1/users/alice/follow", headers=headers).status_code == 200

        def note(response: httpx.Response) -> bool:
            answers[response.status_code] = answers.get(response.status_code, 0) + 1
            if response.status_code >= 500 and (
                response.status_code != 503 or not response.headers.get("Retry-After")
            ):
                bad.append(f"{response.request.url.path}: {response.status_code} {response.text}")
            return response.status_code < 300

        def load(seed: int) -> None:
            own = random.Random(seed)
            with httpx.Client(base_url=server.base, timeout=60) as c:
                while not stop.is_set():
                    action = own.random()
                    if action < 0.3 or not acknowledged:
                        response = post_photo(c, alice, own.randrange(10**6))
                        if note(response):
                            acknowledged.append(response.json()["id"])
                        continue
                    post_id = own.choice(acknowledged)
                    name, headers = own.choice(list(fans.items()))
                    if action < 0.7:
                        response = c.post(f"/api/v1/posts/{post_id}/like", headers=headers)
                        if note(response):
                            likes.setdefault(post_id, set()).add(name)
                    elif action < 0.85:
                        response = c.post(
                            f"/api/v1/posts/{post_id}/comments", headers=headers, json={"text": "!"}
                        )
                        if note(response):
                            comments[post_id] = comments.get(post_id, 0) + 1
                    else:
                        note(c.get("/api/v1/feed", headers=headers))

        threads = [threading.Thread(target=load, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(ROUNDS):
                time.sleep(rng.uniform(0.3, 1.5))
                ended, busy = run_sync(_terminate(database))
                tally.injected += 1
                tally.add("connections_ended", ended)
                tally.add("ended_mid_transaction", busy)
            time.sleep(1.0)  # requests after the last termination
        finally:
            stop.set()
            for thread in threads:
                thread.join(120)

        tally.add("requests", sum(answers.values()))
        tally.add("answered_503", answers.get(503, 0))
        tally.add("server_errors", len(bad))
        count_outcomes(tally, client, alice, fans["bob"], acknowledged)
        lost_likes = lost_comments = 0
        for post_id in acknowledged:
            post = client.get(f"/api/v1/posts/{post_id}", headers=alice).json()
            # (a like whose answer was lost may be there too: counted at least, never twice)
            lost_likes += max(0, len(likes.get(post_id, ())) - post["like_count"])
            lost_comments += max(0, comments.get(post_id, 0) - post["comment_count"])
            rows = scale_stack.scalar("SELECT count(*) FROM likes WHERE post_id = $1", int(post_id))
            tally.add("like_count_off_by", abs(rows - post["like_count"]))
            rows = scale_stack.scalar(
                "SELECT count(*) FROM comments WHERE post_id = $1", int(post_id)
            )
            tally.add("comment_count_off_by", abs(rows - post["comment_count"]))
        tally.add("lost_likes", lost_likes)
        tally.add("lost_comments", lost_comments)
        assert server.process.poll() is None, "the API died"
    counts = tally.counts
    assert counts["ended_mid_transaction"] > 0, counts
    assert not bad, bad[:5]
    for what in (
        "lost", "failed", "duplicated_variants", "incomplete_variants", "missing_from_feed",
        "duplicated_feed_entries", "lost_likes", "lost_comments", "like_count_off_by",
        "comment_count_off_by",
    ):  # fmt: skip
        assert counts[what] == 0, counts
