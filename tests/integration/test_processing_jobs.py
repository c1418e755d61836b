"""The upload pipeline's queue handlers (posts/jobs.py) against the real app, database and storage:
at-least-once delivery must be harmless, and deleting posts must not lose shared media."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select, update

from glimpse.backends.queue.models import Job, JobState
from glimpse.errors import StorageUnavailable
from glimpse.media import decoding
from glimpse.posts import jobs, repository, service
from glimpse.posts.models import Media, MediaVariant
from tests.conftest import Glimpse, jpeg_bytes


async def _media_of(glimpse: Glimpse, post_id: int | str) -> list[Media]:
    async with glimpse.container.db.read() as session:
        rows = await session.execute(
            select(Media).where(Media.post_id == int(post_id)).order_by(Media.position)
        )
        return list(rows.scalars())


async def _variant_keys(glimpse: Glimpse, post_id: int | str) -> list[str]:
    async with glimpse.container.db.read() as session:
        rows = await session.execute(
            select(MediaVariant.key)
            .join(Media, Media.id == MediaVariant.media_id)
            .where(Media.post_id == int(post_id))
            .order_by(MediaVariant.key)
        )
        return list(rows.scalars())


async def _jobs(glimpse: Glimpse) -> list[Job]:
    async with glimpse.container.db.read() as session:
        return list((await session.execute(select(Job))).scalars())


async def _post_count(glimpse: Glimpse, headers: dict[str, str], username: str = "alice") -> int:
    response = await glimpse.client.get(f"/api/v1/users/{username}", headers=headers)
    assert response.status_code == 200, response.text
    count: int = response.json()["post_count"]
    return count


async def _get_post(glimpse: Glimpse, headers: dict[str, str], post_id: int) -> Any:
    return await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=headers)


async def test_processing_a_photo_twice_changes_nothing(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()
    post = (await glimpse.upload(headers, filter="clarendon")).json()
    assert await glimpse.run_jobs() == 2  # the photo, then the post's fan-out
    first_view = (await _get_post(glimpse, headers, post["id"])).json()
    keys = await _variant_keys(glimpse, post["id"])
    files = glimpse.stored_files()
    assert first_view["status"] == "ready" and keys

    [media] = await _media_of(glimpse, post["id"])
    decoded: list[object] = []
    monkeypatch.setattr(decoding, "decode_in_child", lambda *args: decoded.append(args))
    await jobs.process_media(glimpse.container, {"media_id": media.id})  # delivered again
    assert decoded == []  # (its renditions are recorded: nothing to make again)

    assert await _variant_keys(glimpse, post["id"]) == keys
    assert (await _get_post(glimpse, headers, post["id"])).json() == first_view
    assert await _post_count(glimpse, headers) == 1
    assert glimpse.stored_files() == files
    assert await glimpse.run_jobs() == 0  # nothing due was queued by the second run


async def test_a_run_again_stores_anew_what_a_run_cut_short_left_missing(glimpse: Glimpse) -> None:
    # Variants are named by their bytes, so two posts of one photo share files. A purge of the
    # other post can take them between this run's put and its commit; the run stores them again
    # after its commit, and if it is cut short there (killed, a full disk, a stop), only a run
    # again can: it must not take the recorded rows for done.
    headers = await glimpse.signup()
    post = (await glimpse.upload(headers)).json()
    await glimpse.run_jobs()
    keys = await _variant_keys(glimpse, post["id"])
    view = (await _get_post(glimpse, headers, post["id"])).json()
    await glimpse.container.storage.delete_many(keys[:3])
    [media] = await _media_of(glimpse, post["id"])
    await jobs.process_media(glimpse.container, {"media_id": media.id})  # delivered again
    await glimpse.run_jobs()
    assert await _variant_keys(glimpse, post["id"]) == keys
    for key in keys:
        assert await glimpse.container.storage.size(key), key
    again = (await _get_post(glimpse, headers, post["id"])).json()
    assert again == view
    for variant in again["media"][0]["variants"]:
        assert (await glimpse.client.get(variant["url"], headers=headers)).status_code == 200


async def test_job_for_a_post_deleted_before_processing_is_a_no_op(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    post = (await glimpse.upload(headers)).json()
    [media] = await _media_of(glimpse, post["id"])
    response = await glimpse.client.delete(f"/api/v1/posts/{post['id']}", headers=headers)
    assert response.status_code == 204

    await jobs.process_media(glimpse.container, {"media_id": media.id})
    await glimpse.run_jobs()

    assert (await _get_post(glimpse, headers, post["id"])).status_code == 404
    assert await _post_count(glimpse, headers) == 0
    assert glimpse.stored_files() == []  # the original went with the post, no variant was made
    assert await _jobs(glimpse) == []  # nothing failed, nothing dead


async def test_variants_stored_for_a_post_deleted_during_processing_are_purged(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()
    post = (await glimpse.upload(headers)).json()
    entered, leave = threading.Event(), threading.Event()
    real_decode = decoding.decode_in_child

    def slow_decode(*args: Any, **kwargs: Any) -> Any:
        # Hold the image work open until the author has deleted the post.
        entered.set()
        leave.wait(10)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(decoding, "decode_in_child", slow_decode)
    worker = asyncio.create_task(glimpse.run_jobs())
    assert await asyncio.to_thread(entered.wait, 10)
    response = await glimpse.client.delete(f"/api/v1/posts/{post['id']}", headers=headers)
    assert response.status_code == 204
    leave.set()
    await asyncio.wait_for(worker, timeout=10)
    await glimpse.run_jobs()

    assert glimpse.stored_files() == []
    # Only the run's guard is left, waiting a lease; it will find nothing to delete.
    [guard] = await _jobs(glimpse)
    assert (guard.name, guard.state) == (service.PURGE_KEYS_JOB, JobState.QUEUED)
    assert await _post_count(glimpse, headers) == 0


async def _make_every_job_due(glimpse: Glimpse) -> None:
    async with glimpse.container.db.write() as session:
        await session.execute(
            update(Job).where(Job.state == JobState.QUEUED).values(available_at=0)
        )


async def test_variants_of_runs_that_died_before_recording_them_are_purged(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()
    post = (await glimpse.upload(headers)).json()

    async def crash(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("the worker died here")

    # Every run stores all variants, then fails before its rows are written, until the job is
    # dead and the post failed: nothing points at those files.
    monkeypatch.setattr(service, "record_processed_media", crash)
    await glimpse.run_jobs()
    assert (await _get_post(glimpse, headers, post["id"])).json()["status"] == "failed"
    assert len(glimpse.stored_files()) == 1 + 8

    await _make_every_job_due(glimpse)  # a lease later
    await glimpse.run_jobs()

    [original] = glimpse.stored_files()  # kept for its post, which its author may still delete
    assert original.relative_to(glimpse.container.settings.data_dir).parts[1] == "originals"


async def test_the_guard_of_a_recorded_run_keeps_its_variants(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    post = (await glimpse.upload(headers)).json()
    assert await glimpse.run_jobs() == 2  # the photo, then the post's fan-out
    files = glimpse.stored_files()

    await _make_every_job_due(glimpse)
    assert await glimpse.run_jobs() == 1  # the guard

    assert glimpse.stored_files() == files
    assert (await _get_post(glimpse, headers, post["id"])).json()["status"] == "ready"
    assert await _jobs(glimpse) == []


async def test_deleting_a_post_keeps_media_another_post_still_uses(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    photo = jpeg_bytes((900, 700), (10, 120, 200))
    first = (await glimpse.upload(headers, files=[("a.jpg", photo)])).json()
    second = (await glimpse.upload(headers, files=[("b.jpg", photo)])).json()
    assert await glimpse.run_jobs() == 2 + 2  # the photos, and the two posts' fan-outs
    shared = await _variant_keys(glimpse, first["id"])
    assert shared and shared == await _variant_keys(glimpse, second["id"])

    response = await glimpse.client.delete(f"/api/v1/posts/{first['id']}", headers=headers)
    assert response.status_code == 204
    assert await glimpse.run_jobs() == 2  # the purge, and the post's removal from feeds

    second_view = (await _get_post(glimpse, headers, second["id"])).json()
    assert second_view["status"] == "ready"
    urls = [v["url"] for m in second_view["media"] for v in m["variants"]]
    assert sorted(u.removeprefix("/media/") for u in urls) == shared
    for url in urls:
        response = await glimpse.client.get(url)
        assert response.status_code == 200, url
        assert response.content
    [original] = await _media_of(glimpse, second["id"])
    assert await glimpse.container.storage.size(original.original_key) is not None

    response = await glimpse.client.delete(f"/api/v1/posts/{second['id']}", headers=headers)
    assert response.status_code == 204
    await glimpse.run_jobs()

    assert glimpse.stored_files() == []
    for url in urls:
        assert (await glimpse.client.get(url)).status_code == 404
    assert await _post_count(glimpse, headers) == 0


async def test_post_whose_original_is_missing_fails_with_a_reason(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    post = (await glimpse.upload(headers)).json()
    [media] = await _media_of(glimpse, post["id"])
    await glimpse.container.storage.delete(media.original_key)

    await glimpse.run_jobs()

    view = (await _get_post(glimpse, headers, post["id"])).json()
    assert view["status"] == "failed"
    assert view["error"]["code"] == "original_missing"
    assert view["error"]["message"]
    assert await _post_count(glimpse, headers) == 0
    [job] = await _jobs(glimpse)
    assert (job.state, job.attempts) == (JobState.DEAD, 1)
    assert (job.last_error or "").startswith("original_missing")


async def test_purge_racing_a_repost_of_the_same_photo_loses_nothing(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()
    photo = jpeg_bytes((900, 700), (200, 30, 90))
    first = (await glimpse.upload(headers, files=[("a.jpg", photo)])).json()
    assert await glimpse.run_jobs() == 2  # the photo, then the post's fan-out
    keys = await _variant_keys(glimpse, first["id"])
    assert (
        await glimpse.client.delete(f"/api/v1/posts/{first['id']}", headers=headers)
    ).status_code == 204
    second = (await glimpse.upload(headers, files=[("b.jpg", photo)])).json()

    # The purge of the first post runs while the second post's worker has stored the very
    # same variant files but not yet committed its rows: the worst moment.
    storage = glimpse.container.storage
    real_put = storage.put_bytes
    stored: list[str] = []

    async def put_then_purge(key: str, data: bytes, content_type: str) -> None:
        await real_put(key, data, content_type)
        stored.append(key)
        if len(stored) == len(keys):
            await jobs.purge_media_keys(glimpse.container, {"keys": keys})

    monkeypatch.setattr(storage, "put_bytes", put_then_purge)
    [media] = await _media_of(glimpse, second["id"])
    await jobs.process_media(glimpse.container, {"media_id": media.id})

    view = (await _get_post(glimpse, headers, second["id"])).json()
    assert view["status"] == "ready"
    for url in (v["url"] for m in view["media"] for v in m["variants"]):
        assert (await glimpse.client.get(url)).status_code == 200, url
    # The queued purge job itself still runs later, and keeps what is used.
    monkeypatch.undo()
    await glimpse.run_jobs()
    for url in (v["url"] for m in view["media"] for v in m["variants"]):
        assert (await glimpse.client.get(url)).status_code == 200, url


async def test_purge_that_decided_before_a_repost_but_deletes_after_it_loses_nothing(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()
    photo = jpeg_bytes((900, 700), (20, 130, 90))
    first = (await glimpse.upload(headers, files=[("a.jpg", photo)])).json()
    assert await glimpse.run_jobs() == 2
    keys = await _variant_keys(glimpse, first["id"])
    assert (
        await glimpse.client.delete(f"/api/v1/posts/{first['id']}", headers=headers)
    ).status_code == 204
    second = (await glimpse.upload(headers, files=[("b.jpg", photo)])).json()

    # The purge marks the keys (the repost has not recorded them yet) and commits; its deletes
    # reach the store only after the repost has committed its rows: a slow store.
    storage = glimpse.container.storage
    real_put, real_delete_many = storage.put_bytes, storage.delete_many
    stored: list[str] = []
    deleting = asyncio.Event()
    purge: list[asyncio.Task[None]] = []

    async def slow_delete_many(doomed: list[str]) -> None:
        deleting.set()
        await asyncio.sleep(0.5)  # the repost records its rows meanwhile
        await real_delete_many(doomed)

    async def put_then_start_purge(key: str, data: bytes, content_type: str) -> None:
        await real_put(key, data, content_type)
        stored.append(key)
        if len(stored) == len(keys):
            purge.append(
                asyncio.create_task(jobs.purge_media_keys(glimpse.container, {"keys": keys}))
            )
            await deleting.wait()  # the marks are committed

    monkeypatch.setattr(storage, "put_bytes", put_then_start_purge)
    monkeypatch.setattr(storage, "delete_many", slow_delete_many)
    [media] = await _media_of(glimpse, second["id"])
    await jobs.process_media(glimpse.container, {"media_id": media.id})
    await purge[0]

    view = (await _get_post(glimpse, headers, second["id"])).json()
    assert view["status"] == "ready"
    for url in (v["url"] for m in view["media"] for v in m["variants"]):
        assert (await glimpse.client.get(url)).status_code == 200, url


@pytest.mark.parametrize("settings", [{"database_busy_timeout_ms": 200}], indirect=True)
async def test_purges_and_sweeps_delete_objects_outside_any_write_transaction(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()
    post = (await glimpse.upload(headers)).json()
    assert await glimpse.run_jobs() == 2
    keys = await _variant_keys(glimpse, post["id"])
    storage, ids = glimpse.container.storage, glimpse.container.ids
    orphan = service.original_key(ids.next_id(), ids.next_id())
    await storage.put_bytes(orphan, b"abandoned upload", "image/jpeg")
    real_delete_many = storage.delete_many
    deleted: list[str] = []

    async def delete_many_taking_the_write_lock(doomed: list[str]) -> None:
        # A slow store's delete must leave the database free for everyone else's writes.
        async with glimpse.container.db.write() as session:
            await session.execute(select(1))
        deleted.extend(doomed)
        await real_delete_many(doomed)

    monkeypatch.setattr(storage, "delete_many", delete_many_taking_the_write_lock)
    monkeypatch.setattr(jobs, "ABANDONED_UPLOAD_SECONDS", -3600)  # the orphan counts as old
    async with glimpse.container.db.write() as session:
        await repository.delete_post(session, int(post["id"]))
    await jobs.purge_media_keys(glimpse.container, {"keys": keys})
    await jobs.sweep_abandoned_uploads(glimpse.container, {})

    assert set(keys) <= set(deleted) and orphan in deleted
    assert await storage.size(orphan) is None


async def test_a_purge_whose_deletes_fail_keeps_its_marks_and_finishes_when_retried(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()
    post = (await glimpse.upload(headers)).json()
    assert await glimpse.run_jobs() == 2
    keys = await _variant_keys(glimpse, post["id"])
    storage = glimpse.container.storage

    async def store_down(doomed: list[str]) -> None:
        raise StorageUnavailable("the store is down")

    monkeypatch.setattr(storage, "delete_many", store_down)
    async with glimpse.container.db.write() as session:
        await repository.delete_post(session, int(post["id"]))
    with pytest.raises(StorageUnavailable):
        await jobs.purge_media_keys(glimpse.container, {"keys": keys})
    async with glimpse.container.db.read() as session:
        assert await repository.marked_deleting(session, keys) == set(keys)

    monkeypatch.undo()
    await jobs.purge_media_keys(glimpse.container, {"keys": keys})

    async with glimpse.container.db.read() as session:
        assert await repository.marked_deleting(session, keys) == set()
    assert [await storage.size(k) for k in keys] == [None] * len(keys)


async def test_sweep_removes_originals_that_no_upload_recorded(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()
    post = (await glimpse.upload(headers)).json()
    [media] = await _media_of(glimpse, post["id"])
    storage, ids = glimpse.container.storage, glimpse.container.ids
    # What a process killed between storing the originals and committing the post leaves.
    orphan_id = ids.next_id()
    orphan = service.original_key(orphan_id, ids.next_id())
    await storage.put_bytes(orphan, b"abandoned upload", "image/jpeg")

    await jobs.sweep_abandoned_uploads(glimpse.container, {})
    assert await storage.size(orphan) is not None  # too recent: it may still be committing

    monkeypatch.setattr(jobs, "ABANDONED_UPLOAD_SECONDS", 0)
    await asyncio.sleep(0.01)  # ids of this very millisecond are not yet "older than now"
    await jobs.sweep_abandoned_uploads(glimpse.container, {})
    assert await storage.size(orphan) is None
    assert await storage.size(media.original_key) is not None  # recorded: kept
    assert await glimpse.run_jobs() == 2  # and the post still processes (and fans out)


async def test_sweep_removes_spooled_uploads_nobody_writes_any_more(glimpse: Glimpse) -> None:
    # A process killed mid-upload leaves its spooled file; the next start or hourly sweep
    # removes it, without a restart in between.
    staging = glimpse.container.storage.staging_dir()
    cut_off, in_progress = staging / "upload-cut-off", staging / "upload-arriving"
    cut_off.write_bytes(b"half an upload")
    in_progress.write_bytes(b"still arriving")
    two_hours_ago = time.time() - 2 * 3600
    os.utime(cut_off, (two_hours_ago, two_hours_ago))

    await jobs.sweep_abandoned_uploads(glimpse.container, {})

    assert not cut_off.exists()
    assert in_progress.read_bytes() == b"still arriving"


async def test_a_late_dead_letter_does_not_fail_a_photo_that_was_processed(
    glimpse: Glimpse,
) -> None:
    # Say a run outlived its lease, another claim used up the attempts and the job went to
    # dead letters, and then the first run finished: the photo is there, the post stays ready.
    headers = await glimpse.signup()
    post = (await glimpse.upload(headers)).json()
    assert await glimpse.run_jobs() == 2  # the photo, then the post's fan-out
    [media] = await _media_of(glimpse, post["id"])

    async with glimpse.container.db.write() as session:
        await service.fail_media(session, media.id, "processing_failed", "processing kept failing")

    view = (await _get_post(glimpse, headers, post["id"])).json()
    assert view["status"] == "ready" and "error" not in view
    assert await _post_count(glimpse, headers) == 1


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # (SQLite: one writer)
async def test_a_media_a_late_run_finished_while_it_was_being_failed_stays_ready(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job is buried (its lease lapsed too often) while a run that outlived its lease is
    # recording: fail_media read the media before that run committed. Under the post's lock
    # it must see the media ready, and leave it so.
    headers = await glimpse.signup()
    post = (await glimpse.upload(headers)).json()
    [media] = await _media_of(glimpse, post["id"])
    real = repository.get_media
    late_run_done: list[bool] = []

    async def get_then_a_late_run_records(session: Any, media_id: int) -> Any:
        found = await real(session, media_id)
        if not late_run_done:
            late_run_done.append(True)
            await jobs.process_media(glimpse.container, {"media_id": media_id})  # (its own)
        return found

    monkeypatch.setattr(repository, "get_media", get_then_a_late_run_records)
    async with glimpse.container.db.write() as session:
        await service.fail_media(session, media.id, "processing_failed", "kept failing")
    monkeypatch.setattr(repository, "get_media", real)
    assert late_run_done
    [media] = await _media_of(glimpse, post["id"])
    assert media.status == "ready"
    shown = (await _get_post(glimpse, headers, post["id"])).json()
    assert shown["status"] == "ready", shown
