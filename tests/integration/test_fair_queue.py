"""Claims are fair across accounts: one account's many slow jobs do not starve another's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from glimpse.backends.queue.base import ClaimedJob
from glimpse.backends.queue.outbox import enqueue
from glimpse.config import Settings
from glimpse.container import Container, build_container
from glimpse.jobs import Payload, registry
from glimpse.posts.models import Media
from tests.conftest import Glimpse, jpeg_bytes
from tests.databases import migrate

ALICE, BOB, CAROL = 101, 202, 303


async def _nothing(container: Container, payload: Payload) -> None:
    return None


NAME = f"test_fair_{uuid.uuid4().hex[:8]}"
registry.job(NAME)(_nothing)


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[Container]:
    migrate(settings.resolved_database_url)
    made = build_container(settings, node_id=1)
    yield made
    await made.close()


async def add(container: Container, owner: int | None, label: str) -> None:
    async with container.db.write() as session:
        enqueue(session, container.ids, NAME, {"label": label}, max_attempts=5, owner=owner)


async def claim(container: Container) -> ClaimedJob:
    job = await container.queue.claim({NAME})
    assert job is not None
    return job


async def test_one_account_s_many_jobs_do_not_delay_another_s_single_job(
    container: Container,
) -> None:
    for i in range(20):
        await add(container, ALICE, f"alice-{i}")
    await add(container, BOB, "bob")
    labels = []
    for _ in range(2):
        job = await claim(container)
        labels.append(job.payload["label"])
        await container.queue.complete(job)  # one worker: each job is done before the next claim
    assert "bob" in labels


async def test_the_account_with_fewer_jobs_running_goes_first(container: Container) -> None:
    await add(container, ALICE, "alice-1")
    await add(container, ALICE, "alice-2")
    for i in range(3):
        await add(container, BOB, f"bob-{i}")
    first = await claim(container)
    assert first.payload["label"] == "alice-1"  # fewer waiting (2 against 3)
    # Alice's first job still runs: Bob has none running, so his go first though he has more.
    assert (await claim(container)).payload["label"] == "bob-0"
    assert (await claim(container)).payload["label"] == "alice-2"


async def test_between_equals_the_job_waiting_longest_goes_first(container: Container) -> None:
    await add(container, CAROL, "carol")
    await add(container, ALICE, "alice")
    await add(container, None, "system")
    assert [(await claim(container)).payload["label"] for _ in range(3)] == [
        "carol",
        "alice",
        "system",
    ]


async def test_jobs_without_an_owner_are_claimed_too(container: Container) -> None:
    for i in range(3):
        await add(container, None, f"system-{i}")
    assert [(await claim(container)).payload["label"] for _ in range(3)] == [
        "system-0",
        "system-1",
        "system-2",
    ]


async def test_concurrent_claims_never_take_one_job_twice(container: Container) -> None:
    for i in range(30):
        await add(container, [ALICE, BOB, CAROL, None][i % 4], f"job-{i}")
    claimed = await asyncio.gather(*(container.queue.claim({NAME}) for _ in range(40)))
    ids = [job.id for job in claimed if job is not None]
    assert len(ids) == len(set(ids)) == 30


async def test_a_photo_upload_s_jobs_belong_to_its_author(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    bob = await glimpse.signup("bob")
    many = [(f"p{i}.jpg", jpeg_bytes((64, 64), (i, 0, 0))) for i in range(20)]
    assert (await glimpse.upload(alice, many)).status_code == 202
    single = await glimpse.upload(bob)
    assert single.status_code == 202
    async with glimpse.container.db.read() as session:
        [bobs_media] = (
            await session.execute(select(Media.id).where(Media.post_id == int(single.json()["id"])))
        ).scalars()
    queue = glimpse.container.queue
    first_two: list[Any] = []
    for _ in range(2):
        job = await queue.claim(registry.names())
        assert job is not None
        first_two.append(job.payload.get("media_id"))
        await queue.retry(job, "", 3600)  # out of the way, as if done
    assert bobs_media in first_two
