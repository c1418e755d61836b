"""A full, read-only or failing disk is a fault that passes: the API answers 503 with
Retry-After, jobs wait for the store to come back, and no post fails for it.

Tests run as root, where a read-only folder (chmod) still takes writes; the failing operations
are the storage module's os calls, made to fail as the kernel would, for paths in the store only.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from glimpse.backends.queue.models import Job, JobState
from glimpse.backends.storage import LocalStorage, ObjectMissing
from glimpse.backends.storage import local as local_storage
from glimpse.backends.storage.local import disk_fault
from glimpse.errors import StorageUnavailable
from glimpse.media import decoding
from glimpse.posts import jobs as post_jobs
from glimpse.posts import service
from tests.conftest import Glimpse, assert_error

FAULTS = [
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EIO,
    errno.EMFILE,
]


class Disk:
    """Makes the storage module's os calls fail for paths under `root` while `failing`."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = str(root.resolve())
        self.failing: int | None = None
        self._wrap(monkeypatch, "replace", lambda a: a[1])
        self._wrap(monkeypatch, "unlink", lambda a: a[0], removing=True)

        real_read = local_storage._read_file

        def read(path: Path) -> bytes:
            self._check(path)
            return real_read(path)

        monkeypatch.setattr(local_storage, "_read_file", read)

    def _wrap(
        self,
        monkeypatch: pytest.MonkeyPatch,
        name: str,
        target: Callable[..., Any],
        removing: bool = False,
    ) -> None:
        real = getattr(os, name)

        def failing(*args: Any, **kwargs: Any) -> Any:
            self._check(target(args), removing)
            return real(*args, **kwargs)

        monkeypatch.setattr(local_storage.os, name, failing)

    def _check(self, path: object, removing: bool = False) -> None:
        # Uploads are spooled in .staging by the upload reader, which is not the store's code.
        if self.failing is None or not str(path).startswith(self.root) or ".staging" in str(path):
            return
        # A full disk still lets files be removed (that is how space is freed).
        if removing and self.failing in (errno.ENOSPC, errno.EDQUOT):
            return
        raise OSError(self.failing, os.strerror(self.failing), str(path))


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


@pytest.mark.parametrize("fault", [*FAULTS, errno.ETIMEDOUT], ids=errno.errorcode.get)
async def test_disk_faults_are_storage_unavailable(
    store: LocalStorage, monkeypatch: pytest.MonkeyPatch, fault: int
) -> None:
    await store.put_bytes("a/kept", b"kept", "text/plain")
    disk = Disk(store.root, monkeypatch)
    disk.failing = fault
    operations = [store.put_bytes("a/new", b"x", "text/plain"), store.get_bytes("a/kept")]
    if fault not in (errno.ENOSPC, errno.EDQUOT):
        operations.append(store.delete("a/kept"))
    for operation in operations:
        with pytest.raises(StorageUnavailable) as raised:
            await operation
        assert raised.value.status == 503
        assert raised.value.code == "storage_unavailable"
        assert int((raised.value.headers or {})["Retry-After"]) > 0
        assert str(store.root) not in raised.value.message  # no server paths to clients
    disk.failing = None
    assert await store.get_bytes("a/kept") == b"kept"


async def test_other_errors_are_not_storage_faults(
    store: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ObjectMissing):
        await store.get_bytes("no/such/key")
    Disk(store.root, monkeypatch).failing = errno.ENAMETOOLONG
    with pytest.raises(OSError) as raised:
        await store.put_bytes("a/b", b"x", "text/plain")
    assert not isinstance(raised.value, StorageUnavailable)


# -- Through the app and the worker -------------------------------------------------------


@pytest.fixture
def disk(glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    storage = glimpse.container.storage
    assert isinstance(storage, LocalStorage)
    yield Disk(storage.root, monkeypatch)


async def _post(glimpse: Glimpse, headers: dict[str, str], post_id: str) -> Any:
    response = await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _processing_job(glimpse: Glimpse) -> Job:
    async with glimpse.container.db.read() as session:
        [job] = (
            await session.execute(select(Job).where(Job.name == service.PROCESS_MEDIA_JOB))
        ).scalars()
        return job


async def _make_due(glimpse: Glimpse) -> None:
    async with glimpse.container.db.write() as session:
        await session.execute(
            update(Job).where(Job.state == JobState.QUEUED).values(available_at=0)
        )


@pytest.mark.parametrize("fault", [errno.ENOSPC, errno.EROFS], ids=errno.errorcode.get)
async def test_an_upload_while_the_store_cannot_take_it_gets_503_then_succeeds(
    glimpse: Glimpse, disk: Disk, fault: int
) -> None:
    headers = await glimpse.signup()
    disk.failing = fault
    response = await glimpse.upload(headers)
    assert_error(response, 503, "storage_unavailable")
    assert int(response.headers["Retry-After"]) > 0
    disk.failing = None
    response = await glimpse.upload(headers)
    assert response.status_code == 202, response.text
    await glimpse.run_jobs()
    assert (await _post(glimpse, headers, response.json()["id"]))["status"] == "ready"


@pytest.mark.parametrize(
    "settings", [{"job_retry_base_seconds": 1, "job_max_attempts": 2}], indirect=True
)
@pytest.mark.parametrize("fault", [errno.ENOSPC, errno.EROFS, errno.EIO], ids=errno.errorcode.get)
async def test_processing_waits_for_the_store_to_come_back_and_the_post_gets_ready(
    glimpse: Glimpse, disk: Disk, fault: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A store that cannot delete either (EROFS, EIO) leaves the failed run's files marked as
    # being deleted; the next run waits for that purge before storing them again, and gives up
    # as a storage fault after DELETION_WAIT_SECONDS (a minute: two here, the same path).
    monkeypatch.setattr(post_jobs, "DELETION_WAIT_SECONDS", 2.0)
    headers = await glimpse.signup()
    post = (await glimpse.upload(headers)).json()
    disk.failing = fault
    for _ in range(10):  # five times job_max_attempts
        before = time.time()
        await glimpse.run_jobs()
        job = await _processing_job(glimpse)
        assert job.state == JobState.QUEUED
        assert job.attempts == 0  # a storage fault is not the job's
        assert before < job.available_at <= time.time() + 60  # back within a minute
        assert job.last_error is not None and job.last_error.startswith("storage_unavailable")
        assert (await _post(glimpse, headers, post["id"]))["status"] == "processing"
        await _make_due(glimpse)
    disk.failing = None
    await glimpse.run_jobs()
    assert (await _post(glimpse, headers, post["id"]))["status"] == "ready"


@pytest.mark.parametrize(
    "settings",
    [{"job_retry_base_seconds": 1000, "storage_retry_max_delay_seconds": 60}],
    indirect=True,
)
async def test_retries_of_storage_faults_are_at_most_the_cap_apart(
    glimpse: Glimpse, disk: Disk
) -> None:
    headers = await glimpse.signup()
    await glimpse.upload(headers)
    disk.failing = errno.EROFS
    for _ in range(3):
        await glimpse.run_jobs()
        assert (await _processing_job(glimpse)).available_at <= time.time() + 60
        await _make_due(glimpse)


@pytest.mark.parametrize(
    "settings", [{"job_retry_base_seconds": 1, "storage_retry_window_seconds": 0}], indirect=True
)
async def test_a_store_down_past_the_window_buries_the_job(glimpse: Glimpse, disk: Disk) -> None:
    headers = await glimpse.signup()
    post = (await glimpse.upload(headers)).json()
    disk.failing = errno.EIO
    await glimpse.run_jobs()
    assert (await _processing_job(glimpse)).state == JobState.DEAD
    failed = await _post(glimpse, headers, post["id"])
    assert (failed["status"], failed["error"]["code"]) == ("failed", "storage_unavailable")


async def test_a_store_below_its_free_space_floor_fails_its_check(tmp_path: Path) -> None:
    await LocalStorage(tmp_path / "roomy", free_bytes_floor=1).check()
    full = LocalStorage(tmp_path / "full", free_bytes_floor=2**62)  # more than any disk has
    with pytest.raises(StorageUnavailable, match="free"):
        await full.check()


@pytest.mark.parametrize("settings", [{"storage_free_bytes_floor": 2**62}], indirect=True)
async def test_readyz_reports_a_full_disk(glimpse: Glimpse) -> None:
    response = await glimpse.client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["storage"].startswith("failed") and "free" in body["checks"]["storage"]
    # The embedded database lies on a disk below the same floor.
    assert "free" in body["checks"]["database"]
    assert body["checks"]["queue"] == "ok"


@pytest.mark.parametrize("settings", [{"job_retry_base_seconds": 1}], indirect=True)
async def test_an_original_the_decoding_child_cannot_read_is_a_storage_fault(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The child reads the original from the disk itself; what it meets comes back as errno.
    def unreadable(*args: Any) -> Any:
        raise decoding.OriginalUnreadable(errno.EIO, "Input/output error")

    headers = await glimpse.signup()
    post = (await glimpse.upload(headers)).json()
    monkeypatch.setattr(decoding, "decode_in_child", unreadable)
    await glimpse.run_jobs()
    job = await _processing_job(glimpse)
    assert (job.state, job.attempts) == (JobState.QUEUED, 0)
    assert (job.last_error or "").startswith("storage_unavailable")
    monkeypatch.undo()
    await _make_due(glimpse)
    await glimpse.run_jobs()
    assert (await _post(glimpse, headers, post["id"]))["status"] == "ready"


# the free-space floor is compared in bytes: one byte under it fails the check.
async def test_free_space_floor_is_in_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    floor = 100 * 2**20
    store = LocalStorage(tmp_path / "store", free_bytes_floor=floor)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        "glimpse.backends.storage.local.shutil.disk_usage",
        lambda _p: type(usage)(usage.total, usage.total - floor + 1, floor - 1),
    )
    with pytest.raises(StorageUnavailable, match="free"):
        await store.check()
    monkeypatch.setattr(
        "glimpse.backends.storage.local.shutil.disk_usage",
        lambda _p: type(usage)(usage.total, usage.total - floor, floor),
    )
    await store.check()


# a timeout without an errno (asyncio, a network mount's client) is a storage fault too.
async def test_a_plain_timeout_is_a_storage_fault() -> None:
    fault = disk_fault(TimeoutError("timed out"), "store files")
    assert isinstance(fault, StorageUnavailable)
    assert "timed out" in fault.message


async def _faulting_since(glimpse: Glimpse, seconds_ago: float) -> None:
    since = time.time() - seconds_ago
    async with glimpse.container.db.write() as session:
        await session.execute(
            update(Job)
            .where(Job.state == JobState.QUEUED)
            .values(
                last_error=f"storage_unavailable since {since:.3f} (5 times): full", available_at=0
            )
        )


@pytest.mark.parametrize("settings", [{"job_retry_base_seconds": 1}], indirect=True)
async def test_the_window_counts_from_the_first_fault_in_seconds(
    glimpse: Glimpse, disk: Disk
) -> None:
    headers = await glimpse.signup()
    await glimpse.upload(headers)
    disk.failing = errno.ENOSPC
    await glimpse.run_jobs()
    # Two minutes into a 30-minute window: retried again.
    await _faulting_since(glimpse, 120)
    await glimpse.run_jobs()
    assert (await _processing_job(glimpse)).state == JobState.QUEUED
    # Past the window since the first fault: buried.
    await _faulting_since(glimpse, glimpse.container.settings.storage_retry_window_seconds + 1)
    await glimpse.run_jobs()
    assert (await _processing_job(glimpse)).state == JobState.DEAD
