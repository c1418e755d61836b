"""The API over a full bucket (MinIO's 507 `XMinioStorageFull`, through tests/full_bucket.py's
proxy in front of moto), the default run's share of the fault suite's tests/faults/
test_full_store.py: an upload is a 503 with Retry-After, reads and likes still answer, a post
whose processing meets the full bucket waits for room rather than failing, and a store's answer
S3 never sends (a HEAD without its length) is a 503 too, never a 500."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from glimpse.config import Settings
from glimpse.worker import drain
from tests.api.test_upload_validation import process
from tests.conftest import Glimpse, assert_error
from tests.full_bucket import FullableBucketProxy, full_bucket_fixture  # noqa: F401


@pytest.fixture
def settings(settings: Settings, full_bucket: FullableBucketProxy) -> Settings:
    # A job fails for good at its second counted attempt: a storage fault must not count.
    # No origin cache: every media read below asks the bucket.
    return settings.model_copy(
        update={
            "storage_url": f"s3://glimpse-{uuid.uuid4().hex[:12]}?endpoint={full_bucket.endpoint}",
            "origin_cache_bytes": 0,
            "job_max_attempts": 2,
        }
    )


async def _post(glimpse: Glimpse, headers: dict[str, str], post_id: str) -> Any:
    response = await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _run_jobs_while_faulty(glimpse: Glimpse) -> None:
    # (Retries of storage faults are due at once under the tests' settings: a few runs, not
    # drain's "until none is due", which the fault would keep from ever coming.)
    await drain(glimpse.container, max_jobs=6)
    assert not (await glimpse.container.queue.state_counts()).get("dead")


async def test_a_full_bucket_refuses_uploads_with_503_and_still_serves_reads(
    glimpse: Glimpse, full_bucket: FullableBucketProxy
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    assert (await glimpse.client.post("/api/v1/users/alice/follow", headers=bob)).status_code == 200
    earlier = await process(glimpse, alice, await glimpse.upload(alice))
    variant_url = earlier["media"][0]["variants"][0]["url"]

    full_bucket.full = True
    response = await glimpse.upload(alice)
    assert_error(response, 503, "storage_unavailable")
    assert int(response.headers["Retry-After"]) >= 1
    assert full_bucket.refused >= 1
    assert (await glimpse.client.get(variant_url)).status_code == 200
    feed = await glimpse.client.get("/api/v1/feed", headers=bob)
    assert feed.status_code == 200 and feed.json()["items"][0]["id"] == earlier["id"]
    assert (await glimpse.client.get("/api/v1/users/alice", headers=bob)).status_code == 200
    like = await glimpse.client.post(f"/api/v1/posts/{earlier['id']}/like", headers=bob)
    assert like.status_code == 204

    full_bucket.full = False
    assert (await process(glimpse, alice, await glimpse.upload(alice)))["status"] == "ready"


async def test_processing_that_meets_a_full_bucket_waits_for_room_and_the_post_gets_ready(
    glimpse: Glimpse, full_bucket: FullableBucketProxy
) -> None:
    headers = await glimpse.signup()
    post = (await glimpse.upload(headers)).json()  # the original is in the bucket
    full_bucket.full = True
    await _run_jobs_while_faulty(glimpse)
    assert full_bucket.refused >= 2
    assert (await _post(glimpse, headers, post["id"]))["status"] == "processing"
    full_bucket.full = False
    await glimpse.run_jobs()
    assert (await _post(glimpse, headers, post["id"]))["status"] == "ready"


async def test_a_store_answering_heads_without_a_length_is_503_never_500(
    glimpse: Glimpse, full_bucket: FullableBucketProxy
) -> None:
    # The fault suite's first run: its proxy dropped the length from HEAD answers, and media
    # reads answered 500 while jobs failed for good on KeyError('ContentLength').
    headers = await glimpse.signup()
    ready = await process(glimpse, headers, await glimpse.upload(headers))
    pending = (await glimpse.upload(headers)).json()
    full_bucket.head_lengths = False

    media = await glimpse.client.get(ready["media"][0]["variants"][0]["url"])
    assert_error(media, 503, "storage_unavailable")  # (the fixture fails any 500 too)
    assert int(media.headers["Retry-After"]) >= 1
    # (The job records the post's files, then checks none went to a purge meanwhile: the
    # post may be ready already, but the job is retried, not buried, until the check is done.)
    await _run_jobs_while_faulty(glimpse)
    assert (await _post(glimpse, headers, pending["id"]))["status"] != "failed"

    full_bucket.head_lengths = True
    await glimpse.run_jobs()
    assert (await _post(glimpse, headers, pending["id"]))["status"] == "ready"
