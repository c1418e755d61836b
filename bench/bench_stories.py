"""Stories (issue 14): the tray, and the reaper's throughput, each beside a reference in the
same run.

Tray: a viewer follows 1,000 accounts, 200 of which have live stories (1-3 each), and every
account has 30 expired stories in its archive (what a month of daily stories leaves). Timed,
in turns: GET /api/v1/stories/tray through the real app (in-process, httpx's ASGI transport),
the tray's one statement alone (stories.repository.tray), and the straightforward loop a first
version would write: per followed account, its live stories, then per story whether the viewer
saw it, through the same session.

Reaper: N expired stories, each with a media row, 10 variant rows and 10 small files on disk,
archived by purge_expired_stories and the purge job it queues (rows and files), against the
same work written by hand in the same run: one DELETE of the variant rows and an unlink per
file.

    python bench/bench_stories.py [--rounds 300] [--reap 2000]

(The loop, which takes seconds, runs in every tenth round only.)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from glimpse.app import create_app
from glimpse.config import Settings
from glimpse.container import Container
from glimpse.db.migrate import upgrade_to_head
from glimpse.graph.models import Follow
from glimpse.ids import smallest_id_at
from glimpse.stories import repository
from glimpse.stories.jobs import purge_expired_stories
from glimpse.stories.models import Story, StoryView
from glimpse.worker import drain

FOLLOWED = 1000
WITH_STORIES = 200
ARCHIVED_PER_ACCOUNT = 30
VARIANTS = [
    (name, kind) for name in ("story", "w1080", "w640", "w320", "sq150") for kind in ("j", "w")
]


def _ts(value: datetime) -> str:
    # As SQLAlchemy keeps a datetime in SQLite.
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class Rows:
    """Bulk rows of users, follows and stories, written with sqlite3 in one transaction."""

    def __init__(self, db: Path) -> None:
        self.db = sqlite3.connect(db)
        self.next = smallest_id_at(int(time.time() * 1000) - 40 * 86_400_000)

    def new_id(self) -> int:
        self.next += 1
        return self.next

    def users(self, count: int, prefix: str) -> list[int]:
        ids = [self.new_id() for _ in range(count)]
        now = _ts(datetime.now(UTC))
        self.db.executemany(
            "INSERT INTO users (id, username, display_name, bio, is_private, password_hash,"
            " post_count, follower_count, following_count, created_at, feed_pull)"
            " VALUES (?, ?, '', '', 0, 'x', 0, 0, 0, ?, 0)",
            [(i, f"{prefix}{n}", now) for n, i in enumerate(ids)],
        )
        return ids

    def story(
        self, author: int, created: datetime, ttl: timedelta, keys: list[str] | None = None
    ) -> int:
        story_id = self.new_id()
        media_id = self.new_id()
        self.db.execute(
            "INSERT INTO posts (id, author_id, caption, filter_name, status, like_count,"
            " comment_count, created_at, kind) VALUES (?, ?, '', 'normal', 'ready', 0, 0, ?,"
            " 'story')",
            (story_id, author, _ts(created)),
        )
        self.db.execute(
            "INSERT INTO stories (id, author_id, created_at, expires_at, archived)"
            " VALUES (?, ?, ?, ?, ?)",
            (story_id, author, _ts(created), _ts(created + ttl), int(keys is None)),
        )
        self.db.execute(
            "INSERT INTO media (id, post_id, author_id, position, kind, status, original_key,"
            " original_type, original_bytes, alt_text, width, height, blurhash, created_at)"
            " VALUES (?, ?, ?, 0, 'image', 'ready', ?, 'image/jpeg', 1000, '', 1080, 1350,"
            " 'LEHV6nWB2yk8pyo0adR*.7kCMdnj', ?)",
            (media_id, story_id, author, f"originals/x/{story_id}/{media_id}", _ts(created)),
        )
        if keys is None:
            return story_id  # archived: the reaper took its variants down
        self.db.executemany(
            "INSERT INTO media_variants (media_id, name, content_type, width, height, key,"
            " size_bytes) VALUES (?, ?, ?, 100, 100, ?, 1000)",
            [
                (media_id, name, "image/jpeg" if kind == "j" else "image/webp", key)
                for (name, kind), key in zip(VARIANTS, keys, strict=True)
            ],
        )
        return story_id


def _keys(seed: str) -> list[str]:
    """Content-addressed variant keys, as variant_key makes them."""
    digests = [hashlib.sha256(f"{seed}/{k}".encode()).hexdigest() for k in range(len(VARIANTS))]
    return [f"v/{d[:2]}/{d}.jpg" for d in digests]


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


async def _loop_tray(container: Container, viewer: int, now: datetime) -> int:
    """The per-account loop: what the one statement replaces."""
    count = 0
    async with container.db.read() as session:
        followed = (
            await session.execute(select(Follow.followee_id).where(Follow.follower_id == viewer))
        ).scalars()
        for author in list(followed):
            stories = await repository.live_stories_of(session, author, now, ready_only=True)
            for story in stories:
                seen = await session.execute(
                    select(StoryView.story_id).where(
                        StoryView.story_id == story.id, StoryView.viewer_id == viewer
                    )
                )
                seen.first()
                count += 1
    return count


async def bench_tray(data_dir: Path, rounds: int) -> dict[str, Any]:
    settings = Settings(data_dir=data_dir, secret_key="bench", rate_limits="off")
    upgrade_to_head(settings.resolved_database_url)
    app = create_app(settings)
    results: dict[str, list[float]] = {"GET /stories/tray": [], "one statement": [], "loop": []}
    async with app.router.lifespan_context(app):
        container: Container = app.state.container
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            body = {"username": "viewer", "password": "correct horse"}
            assert (await client.post("/api/v1/accounts", json=body)).status_code == 201
            token = (await client.post("/api/v1/auth/token", json=body)).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            viewer = int((await client.get("/api/v1/me", headers=headers)).json()["id"])
            started = time.perf_counter()
            rows = Rows(data_dir / "glimpse.db")
            authors = rows.users(FOLLOWED, "author")
            rows.db.executemany(
                "INSERT INTO follows (follower_id, followee_id, id, created_at) VALUES (?, ?, ?, ?)",
                [(viewer, a, rows.new_id(), _ts(datetime.now(UTC))) for a in authors],
            )
            now = datetime.now(UTC)
            rng = random.Random(14)
            live = 0
            for n, author in enumerate(authors):
                for day in range(ARCHIVED_PER_ACCOUNT, 0, -1):
                    rows.story(author, now - timedelta(days=day, hours=2), timedelta(days=1))
                if n < WITH_STORIES:
                    for _ in range(rng.randint(1, 3)):
                        made = now - timedelta(minutes=rng.randint(1, 1200))
                        rows.story(author, made, timedelta(days=1), keys=_keys(f"{n}-{made}"))
                        live += 1
            # The viewer has seen about half of the live stories.
            live_ids = [
                r[0]
                for r in rows.db.execute("SELECT id FROM stories WHERE expires_at > ?", (_ts(now),))
            ]
            rows.db.executemany(
                "INSERT INTO story_views (story_id, viewer_id, id, viewed_at) VALUES (?, ?, ?, ?)",
                [(s, viewer, rows.new_id(), _ts(now)) for s in live_ids[::2]],
            )
            rows.db.commit()
            total = rows.db.execute("SELECT count(*) FROM stories").fetchone()[0]
            rows.db.execute("ANALYZE")
            rows.db.close()
            loaded = time.perf_counter() - started
            tray = (await client.get("/api/v1/stories/tray", headers=headers)).json()["items"]
            assert len(tray) == WITH_STORIES, len(tray)
            assert sum(len(i["stories"]) for i in tray) == live
            assert await _loop_tray(container, viewer, container.now()) == live
            for i in range(rounds):
                order = list(results)
                if i % 2:
                    order.reverse()
                for label in order:
                    if label == "loop" and i % 10:
                        continue  # seconds a run: every tenth round is enough to know it
                    t0 = time.perf_counter()
                    if label == "GET /stories/tray":
                        response = await client.get("/api/v1/stories/tray", headers=headers)
                        assert response.status_code == 200
                    elif label == "one statement":
                        await repository.tray(container.db, viewer, container.now())
                    else:
                        await _loop_tray(container, viewer, container.now())
                    results[label].append(time.perf_counter() - t0)
    summary: dict[str, Any] = {"loaded_s": loaded, "live": live, "stories": total}
    for label, samples in results.items():
        summary[label] = _percentiles(samples)
    return summary


async def bench_reaper(data_dir: Path, count: int) -> dict[str, Any]:
    settings = Settings(
        data_dir=data_dir, secret_key="bench", rate_limits="off", media_gc_delay_seconds=0
    )
    upgrade_to_head(settings.resolved_database_url)
    app = create_app(settings)
    media_root = data_dir / "media"
    async with app.router.lifespan_context(app):
        container: Container = app.state.container
        rows = Rows(data_dir / "glimpse.db")
        [author] = rows.users(1, "reaped")
        expired_at = datetime.now(UTC) - timedelta(days=2)

        def make(batch: str) -> list[Path]:
            paths = []
            for n in range(count):
                keys = _keys(f"{batch}-{n}")
                rows.story(author, expired_at, timedelta(days=1), keys=keys)
                for key in keys:
                    path = media_root / key
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(b"x" * 1000)
                    paths.append(path)
            rows.db.commit()
            return paths

        # The reference first: the same rows and files, removed by hand.
        paths = make("aa")
        conn = sqlite3.connect(data_dir / "glimpse.db")
        t0 = time.perf_counter()
        conn.execute(
            "DELETE FROM media_variants WHERE media_id IN (SELECT media.id FROM media JOIN"
            " stories ON stories.id = media.post_id WHERE stories.archived = 0)"
        )
        conn.execute("UPDATE stories SET archived = 1 WHERE archived = 0")
        conn.commit()
        for path in paths:
            os.unlink(path)
        by_hand = time.perf_counter() - t0
        conn.close()

        paths = make("bb")
        t0 = time.perf_counter()
        await purge_expired_stories(container, {})
        await drain(container)
        reaper = time.perf_counter() - t0
        assert not any(p.exists() for p in paths), "the reaper left files behind"
        async with container.db.read() as session:
            left = (
                await session.execute(select(Story.id).where(Story.archived.is_(False)))
            ).first()
        assert left is None
    return {"count": count, "reaper_s": reaper, "by_hand_s": by_hand}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--reap", type=int, default=2000)
    parser.add_argument("--parts", default="tray,reaper", help="tray, reaper or both")
    args = parser.parse_args()
    if "tray" in args.parts:
        print_tray(args.rounds)
    if "reaper" in args.parts:
        print_reaper(args.reap)


def print_tray(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tray = asyncio.run(bench_tray(Path(tmp) / "tray", rounds))
    print(
        f"tray: viewer follows {FOLLOWED} accounts, {WITH_STORIES} with {tray['live']} live"
        f" stories, {tray['stories']:,} stories in all (loaded in {tray['loaded_s']:.1f} s),"
        f" {rounds} rounds"
    )
    loop_p50 = tray["loop"][0]
    for label in ("GET /stories/tray", "one statement", "loop"):
        p50, p99 = tray[label]
        print(
            f"  {label:20s} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  loop/this {loop_p50 / p50:6.1f}x"
        )


def print_reaper(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        reaped = asyncio.run(bench_reaper(Path(tmp), count))
    n = reaped["count"]
    print(
        f"reaper: {n} expired stories, 10 variant files each: {n / reaped['reaper_s']:,.0f}"
        f" stories/s ({reaped['reaper_s'] * 1000:.0f} ms); by hand {n / reaped['by_hand_s']:,.0f}"
        f" stories/s ({reaped['by_hand_s'] * 1000:.0f} ms); ratio"
        f" {reaped['reaper_s'] / reaped['by_hand_s']:.2f}"
    )


if __name__ == "__main__":
    main()
