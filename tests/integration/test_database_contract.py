"""The database contract: what every database Glimpse runs on (SQLite, PostgreSQL) must do.

The same migrations go up and down; a claim never hands one job to two workers at once; the
per-key lock puts read-then-write transactions in line; counters stay exact when many requests
race. Each test runs on every database (tests/databases.py)."""

from __future__ import annotations

import asyncio
import functools
import time

import pytest
from alembic import command
from sqlalchemy import func, select, text

from glimpse.accounts import repository as accounts_repository
from glimpse.accounts.models import User
from glimpse.backends.queue.models import Job
from glimpse.backends.queue.outbox import enqueue, ensure_pending
from glimpse.backends.queue.sql import SqlJobQueue
from glimpse.config import Settings
from glimpse.db.database import Database
from glimpse.db.locks import lock_keys
from glimpse.db.migrate import alembic_config, head_revision, upgrade_to_head
from glimpse.ids import IdGenerator
from glimpse.jobs import Payload, registry
from glimpse.posts import repository as posts_repository
from glimpse.privacy import repository as privacy_repository
from tests.conftest import Glimpse
from tests.databases import ON_EVERY_DATABASE, run_sync

pytestmark = ON_EVERY_DATABASE


async def _nothing(container: object, payload: Payload) -> None:  # pragma: no cover
    pass


def _name(prefix: str) -> str:
    return f"{prefix}_{time.monotonic_ns()}"


async def test_migrations_go_down_to_nothing_and_up_again(settings: Settings) -> None:
    url = settings.resolved_database_url
    upgrade_to_head(url)
    config = alembic_config(url)

    def down_and_up() -> None:
        command.downgrade(config, "base")
        command.upgrade(config, "head")

    # (Alembic's env.py runs a loop of its own: give it a thread, as upgrade_to_head does.)
    async def in_thread() -> None:
        await asyncio.to_thread(down_and_up)

    run_sync(in_thread())
    database = Database(url)
    try:
        assert await database.schema_revision() == head_revision()
    finally:
        await database.dispose()


async def test_concurrent_claims_never_hand_one_job_out_twice(db: Database) -> None:
    name = _name("contract_claim")

    registry.job(name)(_nothing)

    ids = IdGenerator(5)
    async with db.write() as session:
        for n in range(40):
            enqueue(session, ids, name, {"n": n}, max_attempts=3, owner=n % 4)
    # Separate Database objects: separate pools, as separate worker processes have.
    others = [Database(db.url) for _ in range(3)]
    queues = [
        SqlJobQueue(d, worker_name=f"w{i}", lease_seconds=60, poll_seconds=0.01)
        for i, d in enumerate([db, *others])
    ]
    claimed: list[int] = []

    async def worker(queue: SqlJobQueue) -> None:
        while True:
            job = await queue.claim({name})
            if job is None:
                return
            claimed.append(job.id)
            await queue.complete(job)

    try:
        await asyncio.gather(*(worker(q) for q in queues for _ in range(3)))
    finally:
        for other in others:
            await other.dispose()
    assert len(claimed) == 40
    assert len(set(claimed)) == 40


async def test_ensure_pending_enqueues_once_however_many_workers_race(db: Database) -> None:
    name = _name("contract_pending")

    registry.job(name)(_nothing)

    others = [Database(db.url) for _ in range(4)]

    async def one(database: Database, node: int) -> bool:
        async with database.write() as session:
            return await ensure_pending(
                session, IdGenerator(node), name, max_attempts=3, delay_seconds=0
            )

    try:
        results = await asyncio.gather(*(one(d, i) for i, d in enumerate([db, *others] * 2)))
    finally:
        for other in others:
            await other.dispose()
    assert sum(results) == 1
    async with db.read() as session:
        count = (await session.execute(select(func.count()).where(Job.name == name))).scalar()
    assert count == 1


async def test_a_purge_decides_only_after_a_transaction_using_the_keys_ends(db: Database) -> None:
    """The purge's check-and-delete: while a transaction recording a key holds it (as
    record_processed_media does), a purge of that key waits for it to end, and so sees what
    it committed."""
    key = _name("variants/contract")
    other = Database(db.url)
    holding = asyncio.Event()
    finish = asyncio.Event()

    async def recorder() -> None:
        async with db.write() as session:
            await lock_keys(session, [key])
            holding.set()
            await finish.wait()

    async def purge() -> list[str]:
        await holding.wait()
        async with other.write() as session:
            return await posts_repository.unreferenced_keys(session, [key])

    try:
        recording = asyncio.create_task(recorder())
        purging = asyncio.create_task(purge())
        await holding.wait()
        await asyncio.sleep(0.5)
        assert not purging.done(), "the purge decided while the key was being recorded"
        finish.set()
        await recording
        assert await purging == [key]
    finally:
        await other.dispose()


async def test_counters_stay_exact_when_many_requests_race(glimpse: Glimpse) -> None:
    star = await glimpse.signup("star")
    fans = [await glimpse.signup(f"fan{n}") for n in range(8)]
    post = (await glimpse.upload(star)).json()
    await glimpse.run_jobs()
    client = glimpse.client

    async def follow_and_like(headers: dict[str, str]) -> None:
        await asyncio.gather(
            client.post("/api/v1/users/star/follow", headers=headers),
            client.post("/api/v1/users/star/follow", headers=headers),
            client.post(f"/api/v1/posts/{post['id']}/like", headers=headers),
            client.post(f"/api/v1/posts/{post['id']}/like", headers=headers),
        )

    await asyncio.gather(*(follow_and_like(h) for h in fans))
    profile = (await client.get("/api/v1/users/star", headers=star)).json()
    assert profile["follower_count"] == 8
    assert (await client.get(f"/api/v1/posts/{post['id']}", headers=star)).json()["like_count"] == 8

    async def undo(headers: dict[str, str]) -> None:
        await asyncio.gather(
            client.delete("/api/v1/users/star/follow", headers=headers),
            client.delete("/api/v1/users/star/follow", headers=headers),
            client.delete(f"/api/v1/posts/{post['id']}/like", headers=headers),
            client.delete(f"/api/v1/posts/{post['id']}/like", headers=headers),
        )

    await asyncio.gather(*(undo(h) for h in fans[:5]))
    profile = (await client.get("/api/v1/users/star", headers=star)).json()
    assert profile["follower_count"] == 3
    assert (await client.get(f"/api/v1/posts/{post['id']}", headers=star)).json()["like_count"] == 3
    me = (await client.get("/api/v1/me", headers=fans[0])).json()
    assert me["following_count"] == 0


@pytest.mark.parametrize("row", ["post", "account"])
async def test_a_row_lock_holds_the_next_locker_of_the_row_until_the_transaction_ends(
    glimpse: Glimpse, row: str
) -> None:
    """The row locks of PostgreSQL's writers (SQLite's write transactions are serial anyway):
    two media of one post finishing at once take the post's row in turn (lock_post); an
    erasure (lock_user) waits for a write that found its account active (lock_active_user)."""
    db = glimpse.container.db
    if db.is_sqlite:
        pytest.skip("SQLite's write transactions are serial: no row lock to take")
    headers = await glimpse.signup("locker")
    post_id = int((await glimpse.upload(headers)).json()["id"])
    async with db.read() as session:
        user_id = (await session.execute(select(User.id).where(User.username == "locker"))).scalar()
    assert user_id is not None
    if row == "post":
        first = functools.partial(posts_repository.lock_post, post_id=post_id)
        then = functools.partial(posts_repository.lock_post, post_id=post_id)
    else:
        first = functools.partial(accounts_repository.lock_active_user, user_id=user_id)
        then = functools.partial(privacy_repository.lock_user, user_id=user_id)
    other = Database(db.url)
    holding = asyncio.Event()
    finish = asyncio.Event()

    async def holder() -> None:
        async with db.write() as session:
            await first(session)
            holding.set()
            await finish.wait()

    async def next_in_line() -> None:
        async with other.write() as session:
            await then(session)

    try:
        held = asyncio.create_task(holder())
        await holding.wait()
        waiting = asyncio.create_task(next_in_line())
        deadline = time.monotonic() + 60  # (a guard against a hang; it times nothing)
        while True:
            if waiting.done():
                waiting.result()
                raise AssertionError(f"the {row}'s row was taken while another held it")
            async with other.read() as watch:  # (a snapshot of the statistics each time)
                waiters = await watch.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database()"
                    )
                )
                if waiters.scalar():
                    break
            assert time.monotonic() < deadline, "nobody waited for the row"
            await asyncio.sleep(0.05)
        finish.set()
        await held
        await waiting
    finally:
        finish.set()
        await other.dispose()


async def test_a_claim_passes_over_a_job_another_claim_has_locked(db: Database) -> None:
    """On PostgreSQL a claim skips the rows other claims hold (FOR UPDATE SKIP LOCKED) rather
    than queue behind them: workers claiming at once each take a job of their own."""
    if db.is_sqlite:
        pytest.skip("SQLite's write transactions are serial: no row lock to pass over")
    name = _name("contract_skip")
    registry.job(name)(_nothing)
    ids = IdGenerator(6)
    async with db.write() as session:
        first = enqueue(session, ids, name, {}, max_attempts=3)
        second = enqueue(session, ids, name, {}, max_attempts=3)
        await session.execute(
            text("UPDATE jobs SET available_at = available_at - 60 WHERE id = :id"), {"id": first}
        )
    other = Database(db.url)
    queue = SqlJobQueue(other, worker_name="w", lease_seconds=60, poll_seconds=0.01)
    try:
        async with db.write() as session:
            # The oldest job's row, as a claim under way in another worker holds it.
            await session.execute(
                text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": first}
            )
            claiming = asyncio.create_task(queue.claim({name}))
            deadline = time.monotonic() + 60  # (a guard against a hang; it times nothing)
            while not claiming.done():
                async with other.read() as watch:  # (a snapshot of the statistics each time)
                    waiters = await watch.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                            " AND datname = current_database()"
                        )
                    )
                    assert not waiters.scalar(), "the claim queued behind a locked job"
                assert time.monotonic() < deadline, "the claim never ended"
                await asyncio.sleep(0.05)
            job = claiming.result()
        assert job is not None and job.id == second
    finally:
        await other.dispose()


async def test_the_version_moves_with_every_commit_of_any_connection_and_only_then(
    db: Database,
) -> None:
    """Database.version: on SQLite, the same for exactly as long as nothing is committed, by
    this process or any other; a reconnection counts anew (so never mistaken for the old
    one's). None on PostgreSQL, which has no such thing: nothing is trusted by it there."""
    first = db.version()
    if not db.is_sqlite:
        assert first is None
        return
    assert first is not None
    await db.fetch(select(func.count()).select_from(User))  # a read moves nothing
    assert db.version() == first
    async with db.write() as session:  # this process's own commit
        await session.execute(text("UPDATE alembic_version SET version_num = version_num"))
    second = db.version()
    assert second not in (None, first)
    other = Database(db.url)  # another process's
    try:
        async with other.write() as session:
            await session.execute(text("UPDATE alembic_version SET version_num = version_num"))
    finally:
        await other.dispose()
    third = db.version()
    assert third not in (None, first, second)
    async with db.write():  # a transaction that writes nothing commits nothing
        pass
    assert db.version() == third
    await db.dispose()  # (the quick connection closed: the next one is another generation)
    assert db.version() not in (None, first, second, third)
