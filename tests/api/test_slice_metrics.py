"""/metrics for every slice (issue 18): uploads, jobs enqueued and the queue's age, feed reads
and the feed cache, fan-out, stories archived, throttled requests, and each backend's health.
Counters are process-wide, so each test looks at how much they moved."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update

from glimpse.backends.queue.models import Job
from tests.api import test_stories as stories
from tests.api.social import follow
from tests.conftest import Glimpse, jpeg_bytes

_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")


def sample(metrics: str, metric: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (labels in any order), 0 when not there."""
    wanted = sorted(f'{k}="{v}"' for k, v in labels.items())
    for line in metrics.splitlines():
        match = _SAMPLE.match(line)
        found = sorted(filter(None, (match["labels"] or "").split(","))) if match else None
        if match and match["name"] == metric and found == wanted:
            return float(match["value"])
    return 0.0


async def scrape(glimpse: Glimpse) -> str:
    response = await glimpse.client.get("/metrics")
    assert response.status_code == 200
    return response.text


async def test_an_accepted_upload_counts_its_files_bytes_and_jobs(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    before = await scrape(glimpse)
    photo = jpeg_bytes()
    assert (await glimpse.upload(headers, files=[("a.jpg", photo)])).status_code == 202
    after = await scrape(glimpse)

    def moved(metric: str, **labels: str) -> float:
        return sample(after, metric, **labels) - sample(before, metric, **labels)

    assert moved("glimpse_uploads_total", kind="post") == 1
    assert moved("glimpse_upload_files_total", media="photo") == 1
    assert moved("glimpse_upload_bytes_total") == len(photo)
    assert moved("glimpse_jobs_enqueued_total", name="process_media") == 1
    # A refused upload is not counted as accepted.
    refused = await glimpse.upload(headers, files=[("a.jpg", b"not a photo")])
    assert refused.status_code == 415
    assert sample(await scrape(glimpse), "glimpse_uploads_total", kind="post") == sample(
        after, "glimpse_uploads_total", kind="post"
    )


async def test_the_oldest_due_job_s_age_is_reported(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    await glimpse.upload(headers)
    async with glimpse.container.db.write() as session:
        await session.execute(update(Job).values(available_at=Job.available_at - 600))
    assert sample(await scrape(glimpse), "glimpse_jobs_oldest_due_age_seconds") >= 600
    await glimpse.run_jobs()
    assert sample(await scrape(glimpse), "glimpse_jobs_oldest_due_age_seconds") < 600


async def test_feed_reads_cache_misses_hits_and_fan_out_are_counted(glimpse: Glimpse) -> None:
    ada = await glimpse.signup("ada")
    bob = await glimpse.signup("bob")
    await follow(glimpse, bob, "ada")
    await glimpse.run_jobs()
    before = await scrape(glimpse)
    assert (await glimpse.client.get("/api/v1/feed", headers=bob)).status_code == 200
    await glimpse.upload(ada)
    await glimpse.run_jobs()  # processed, then fanned out to bob's feed (which exists now)
    assert (await glimpse.client.get("/api/v1/feed", headers=bob)).status_code == 200
    after = await scrape(glimpse)

    def moved(metric: str, **labels: str) -> float:
        return sample(after, metric, **labels) - sample(before, metric, **labels)

    assert moved("glimpse_feed_reads_total", order="ranked") == 2
    assert moved("glimpse_feed_cache_total", result="miss") >= 1  # bob's first read built it
    assert moved("glimpse_feed_cache_total", result="hit") >= 1
    assert moved("glimpse_feed_rebuild_duration_seconds_count") >= 1
    assert moved("glimpse_fanout_batches_total") >= 1
    assert moved("glimpse_fanout_feeds_total") >= 1  # bob's (ada has no feed yet)
    assert moved("glimpse_fanout_batch_duration_seconds_count") >= 1


async def test_archived_stories_are_counted(glimpse: Glimpse) -> None:
    clock = stories.Clock(1_900_000_000.0)
    glimpse.container.clock = clock
    ada = await glimpse.signup("ada")
    story = await stories.post_story(glimpse, ada)
    before = await scrape(glimpse)
    clock.now = stories._at(story["expires_at"])
    await stories.reap(glimpse)
    after = await scrape(glimpse)
    archived = "glimpse_stories_archived_total"
    assert sample(after, archived) - sample(before, archived) == 1
    released = "glimpse_story_variants_released_total"
    assert sample(after, released) - sample(before, released) >= 10


@pytest.mark.parametrize("settings", [{"rate_limits": "api=2/minute"}], indirect=True)
async def test_throttled_requests_are_counted_by_budget(glimpse: Glimpse) -> None:
    before = sample(await scrape(glimpse), "glimpse_throttled_total", budget="api")
    statuses = [(await glimpse.client.get("/api/v1/users/nobody")).status_code for _ in range(4)]
    assert statuses.count(429) == 2
    after = sample(await scrape(glimpse), "glimpse_throttled_total", budget="api")
    assert after - before == 2


async def test_each_backend_s_health_is_a_gauge(glimpse: Glimpse) -> None:
    assert (await glimpse.client.get("/readyz")).status_code == 200
    text = await scrape(glimpse)
    for backend in ("database", "storage", "queue"):
        assert sample(text, "glimpse_backend_up", backend=backend) == 1


async def test_a_backend_that_fails_its_round_trip_is_down_in_the_gauge_and_up_again(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def full_disk(*args: object) -> None:
        raise OSError("No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(glimpse.container.storage, "put_bytes", full_disk)
        assert (await glimpse.client.get("/readyz")).status_code == 503
        text = await scrape(glimpse)
    assert sample(text, "glimpse_backend_up", backend="storage") == 0
    assert sample(text, "glimpse_backend_up", backend="database") == 1
    assert (await glimpse.client.get("/readyz")).status_code == 200
    assert sample(await scrape(glimpse), "glimpse_backend_up", backend="storage") == 1


@pytest.mark.parametrize(
    "settings", [{"rate_limits": "api=100/minute;signup=1/hour"}], indirect=True
)
async def test_a_throttled_request_is_counted_under_its_own_budget(glimpse: Glimpse) -> None:
    before = await scrape(glimpse)
    await glimpse.signup("ada")
    account = {"username": "bob", "password": "correct horse battery"}
    refused = await glimpse.client.post("/api/v1/accounts", json=account)
    assert refused.status_code == 429, refused.text
    after = await scrape(glimpse)

    def moved(budget: str) -> float:
        return sample(after, "glimpse_throttled_total", budget=budget) - sample(
            before, "glimpse_throttled_total", budget=budget
        )

    assert (moved("signup"), moved("api")) == (1, 0)
