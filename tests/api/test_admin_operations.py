"""What the operator's commands do (ops/admin_*.py, storage_check.py), seen through the API: a
dead job retried finishes its post, a disabled account is out, a reset password signs it out
everywhere, and the store is checked against the database."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select, update

from glimpse.backends.queue.models import Job, JobState
from glimpse.ops import admin_jobs, admin_users, storage_check
from glimpse.ops.backup import OperatorError
from glimpse.posts.models import Media
from tests.conftest import Glimpse, assert_error, jpeg_bytes


async def _post(glimpse: Glimpse, headers: dict[str, str], post_id: str) -> dict[str, Any]:
    response = await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _fail_by_losing_the_original(glimpse: Glimpse, headers: dict[str, str]) -> str:
    """A post whose job is buried: its original went missing before it was processed."""
    response = await glimpse.upload(headers)
    assert response.status_code == 202
    post_id = response.json()["id"]
    async with glimpse.container.db.read() as session:
        key = (await session.execute(select(Media.original_key))).scalar_one()
    path = glimpse.container.settings.data_dir / "media" / key
    path.rename(path.with_name("aside"))
    await glimpse.run_jobs()
    post = await _post(glimpse, headers, post_id)
    assert post["status"] == "failed" and post["error"]["code"] == "original_missing"
    path.with_name("aside").rename(path)  # the operator found it
    return str(post_id)


@pytest.mark.local_disk  # (moves files of the media folder by hand)
async def test_a_retried_dead_job_finishes_its_failed_post(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    post_id = await _fail_by_losing_the_original(glimpse, headers)
    [dead] = await admin_jobs.list_jobs(glimpse.container, JobState.DEAD, 10)
    assert dead.name == "process_media" and "gone" in dead.error
    assert await admin_jobs.retry_dead_jobs(glimpse.container, [dead.id]) == [dead.id]
    # A full set of attempts again, due now.
    [again] = await admin_jobs.list_jobs(glimpse.container, JobState.QUEUED, 10)
    assert (again.id, again.attempts) == (dead.id, 0) and again.at <= time.time()
    post = await _post(glimpse, headers, post_id)
    assert post["status"] == "processing" and "error" not in post
    await glimpse.run_jobs()
    post = await _post(glimpse, headers, post_id)
    assert post["status"] == "ready"
    me = (await glimpse.client.get("/api/v1/me", headers=headers)).json()
    assert me["post_count"] == 1
    assert await admin_jobs.list_jobs(glimpse.container, JobState.DEAD, 10) == []


@pytest.mark.local_disk  # (moves files of the media folder by hand)
async def test_a_job_buried_for_its_worker_deaths_shows_them_and_gets_a_fresh_start(
    glimpse: Glimpse,
) -> None:
    headers = await glimpse.signup()
    await _fail_by_losing_the_original(glimpse, headers)
    async with glimpse.container.db.write() as session:  # as if 20 workers had died under it
        await session.execute(
            update(Job).where(Job.state == JobState.DEAD).values(deaths=20, attempts=21)
        )
    [dead] = await admin_jobs.list_jobs(glimpse.container, JobState.DEAD, 10)
    assert (dead.attempts, dead.worker_deaths) == (1, 20)  # only the failure counts
    assert "1/5 +20 worker deaths" in dead.as_text(time.time())
    await admin_jobs.retry_dead_jobs(glimpse.container, [dead.id])
    [again] = await admin_jobs.list_jobs(glimpse.container, JobState.QUEUED, 10)
    assert (again.attempts, again.worker_deaths) == (0, 0)


@pytest.mark.local_disk  # (moves files of the media folder by hand)
async def test_a_post_is_processing_again_only_once_none_of_its_media_is_failed(
    glimpse: Glimpse,
) -> None:
    # Retrying one photo's job while the other is still failed, with no job under way to
    # finish it, would leave the post processing for ever.
    headers = await glimpse.signup()
    response = await glimpse.upload(
        headers, files=[("a.jpg", jpeg_bytes()), ("b.jpg", jpeg_bytes())]
    )
    post_id = response.json()["id"]
    async with glimpse.container.db.read() as session:
        keys = (await session.execute(select(Media.original_key))).scalars().all()
    media = glimpse.container.settings.data_dir / "media"
    for key in keys:
        (media / key).rename(media / f"{key}-aside")
    await glimpse.run_jobs()
    assert (await _post(glimpse, headers, post_id))["status"] == "failed"
    for key in keys:
        (media / f"{key}-aside").rename(media / key)
    first, second = await admin_jobs.list_jobs(glimpse.container, JobState.DEAD, 10)
    await admin_jobs.retry_dead_jobs(glimpse.container, [first.id])
    assert (await _post(glimpse, headers, post_id))["status"] == "failed"
    await admin_jobs.retry_dead_jobs(glimpse.container, [second.id])
    assert (await _post(glimpse, headers, post_id))["status"] == "processing"
    await glimpse.run_jobs()
    assert (await _post(glimpse, headers, post_id))["status"] == "ready"


@pytest.mark.local_disk  # (moves files of the media folder by hand)
async def test_only_dead_jobs_are_retried_and_purged(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    await _fail_by_losing_the_original(glimpse, headers)
    await glimpse.upload(headers)  # a queued job, not dead
    lines = await admin_jobs.list_jobs(glimpse.container, None, 10)
    queued = next(line for line in lines if line.state == JobState.QUEUED)
    assert await admin_jobs.retry_dead_jobs(glimpse.container, [queued.id]) == []
    # Purged only once old enough.
    assert await admin_jobs.purge_dead_jobs(glimpse.container, 3600) == 0
    async with glimpse.container.db.write() as session:
        await session.execute(
            update(Job).where(Job.state == JobState.DEAD).values(available_at=0.0)
        )
    async with glimpse.container.db.write() as session:  # (a queued job as old: it stays)
        await session.execute(
            update(Job).where(Job.state == JobState.QUEUED).values(available_at=0.0)
        )
    assert await admin_jobs.purge_dead_jobs(glimpse.container, 3600) == 1
    states = [line.state for line in await admin_jobs.list_jobs(glimpse.container, None, 10)]
    assert JobState.DEAD not in states and JobState.QUEUED in states


async def test_a_disabled_account_cannot_sign_in_and_its_tokens_stop_working(
    glimpse: Glimpse,
) -> None:
    headers = await glimpse.signup("alice", "correct horse")
    assert await admin_users.set_disabled(glimpse.container, "alice", True)
    assert not await admin_users.set_disabled(glimpse.container, "alice", True)
    assert_error(await glimpse.client.get("/api/v1/me", headers=headers), 401)
    sign_in = {"username": "alice", "password": "correct horse"}
    refused = await glimpse.client.post("/api/v1/auth/token", json=sign_in)
    # Told what a wrong password is told: nobody learns that the account was disabled.
    assert_error(refused, 401, "invalid_credentials")
    # Its profile and posts stay.
    bob = await glimpse.signup("bob")
    assert (await glimpse.client.get("/api/v1/users/alice", headers=bob)).status_code == 200
    assert await admin_users.set_disabled(glimpse.container, "alice", False)
    assert (await glimpse.client.post("/api/v1/auth/token", json=sign_in)).status_code == 200
    # Revoked tokens stay revoked after enabling.
    assert_error(await glimpse.client.get("/api/v1/me", headers=headers), 401)


async def test_a_token_made_before_the_account_was_disabled_is_refused_at_once(
    glimpse: Glimpse,
) -> None:
    # Even one the revocation missed (made in a race with it): the look-up checks the account.
    headers = await glimpse.signup("alice")
    async with glimpse.container.db.write() as session:
        from glimpse.accounts.models import User
        from glimpse.db.base import utcnow

        await session.execute(update(User).values(disabled_at=utcnow()))
    assert_error(await glimpse.client.get("/api/v1/me", headers=headers), 401)
    assert_error(await glimpse.client.get("/api/v1/feed", headers=headers), 401)


async def test_a_reset_password_works_and_signs_the_account_out_everywhere(
    glimpse: Glimpse,
) -> None:
    headers = await glimpse.signup("alice", "correct horse")
    await admin_users.reset_password(glimpse.container, "alice", "battery staple")
    assert_error(await glimpse.client.get("/api/v1/me", headers=headers), 401)
    old = {"username": "alice", "password": "correct horse"}
    assert_error(await glimpse.client.post("/api/v1/auth/token", json=old), 401)
    new = {"username": "alice", "password": "battery staple"}
    assert (await glimpse.client.post("/api/v1/auth/token", json=new)).status_code == 200


@pytest.mark.parametrize(
    ("username", "password"),
    [("Alice!", "correct horse"), ("admin", "correct horse"), ("bob", "short")],
)
async def test_accounts_made_by_the_operator_follow_the_api_s_rules(
    glimpse: Glimpse, username: str, password: str
) -> None:
    with pytest.raises(OperatorError):
        await admin_users.create_user(glimpse.container, username, password)


async def test_an_operator_s_account_signs_in_and_a_taken_name_is_refused(
    glimpse: Glimpse,
) -> None:
    await admin_users.create_user(glimpse.container, "bob", "correct horse")
    sign_in = {"username": "bob", "password": "correct horse"}
    assert (await glimpse.client.post("/api/v1/auth/token", json=sign_in)).status_code == 200
    with pytest.raises(OperatorError, match="taken"):
        await admin_users.create_user(glimpse.container, "bob", "another password")
    with pytest.raises(OperatorError, match="no account"):
        await admin_users.set_disabled(glimpse.container, "nobody", True)


@pytest.mark.local_disk  # (moves files of the media folder by hand)
async def test_the_store_is_checked_against_the_database(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    await glimpse.upload(headers)
    await glimpse.run_jobs()
    report = await storage_check.verify_storage(glimpse.container)
    assert report.sound and report.recorded == report.stored > 1 and not report.unrecorded
    media = glimpse.container.settings.data_dir / "media"
    variant = next(p for p in glimpse.stored_files() if "/v/" in p.as_posix())
    variant.unlink()
    (media / "v" / "00").mkdir(parents=True, exist_ok=True)
    (media / "v" / "00" / "litter.jpg").write_bytes(b"x")
    report = await storage_check.verify_storage(glimpse.container)
    assert not report.sound
    assert report.missing == [variant.relative_to(media).as_posix()]
    assert report.unrecorded == ["v/00/litter.jpg"]
