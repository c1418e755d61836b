"""Local object storage on a real directory: atomic writes, moves, and keys that can never
reach outside the root."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from glimpse.backends.storage import InvalidKey, LocalStorage, ObjectMissing, storage_from_url
from glimpse.errors import StorageUnavailable


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def storage(root: Path) -> LocalStorage:
    return LocalStorage(root)


def _staged(storage: LocalStorage) -> list[Path]:
    return list(storage.staging_dir().iterdir())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_put_bytes_stores_the_object_and_leaves_no_temporary_file(
    storage: LocalStorage, root: Path
) -> None:
    await storage.put_bytes("v/ab/photo.jpg", b"first", "image/jpeg")
    await storage.put_bytes("v/ab/photo.jpg", b"second version", "image/jpeg")

    assert await storage.get_bytes("v/ab/photo.jpg") == b"second version"
    assert await storage.size("v/ab/photo.jpg") == len(b"second version")
    assert (root / "v" / "ab" / "photo.jpg").read_bytes() == b"second version"
    assert _mode(root / "v" / "ab" / "photo.jpg") == 0o644
    assert _staged(storage) == []


async def test_failed_put_bytes_leaves_no_temporary_file_and_no_object(
    storage: LocalStorage, root: Path
) -> None:
    (root / "v" / "taken").mkdir(parents=True)  # a directory where the object should go

    with pytest.raises(OSError):
        await storage.put_bytes("v/taken", b"data", "image/jpeg")

    assert _staged(storage) == []
    assert (root / "v" / "taken").is_dir()


async def test_put_file_moves_the_file_into_the_store(storage: LocalStorage, root: Path) -> None:
    source = storage.staging_dir() / "upload-1"
    source.write_bytes(b"spooled upload")

    await storage.put_file("originals/1/2", source, "image/jpeg")

    assert not source.exists()
    assert await storage.get_bytes("originals/1/2") == b"spooled upload"
    assert _staged(storage) == []


@pytest.mark.skipif(
    not Path("/dev/shm").is_dir()
    or Path("/dev/shm").stat().st_dev == Path(tempfile.gettempdir()).stat().st_dev,
    reason="needs a second filesystem",
)
async def test_put_file_from_another_filesystem_stores_it_like_any_other(
    storage: LocalStorage, root: Path
) -> None:
    fd, name = tempfile.mkstemp(dir="/dev/shm")
    source = Path(name)
    with os.fdopen(fd, "wb") as f:
        f.write(b"from elsewhere")
    try:
        await storage.put_file("originals/3/4", source, "image/jpeg")
    finally:
        source.unlink(missing_ok=True)

    assert not source.exists()
    assert await storage.get_bytes("originals/3/4") == b"from elsewhere"
    assert _staged(storage) == []
    # The same permissions as every other stored object.
    assert _mode(root / "originals" / "3" / "4") == 0o644


async def test_missing_object_reads_as_missing(storage: LocalStorage) -> None:
    with pytest.raises(ObjectMissing):
        await storage.get_bytes("v/00/nothing.jpg")
    assert await storage.size("v/00/nothing.jpg") is None


async def test_a_directory_is_not_an_object(storage: LocalStorage) -> None:
    await storage.put_bytes("v/ab/photo.jpg", b"x", "image/jpeg")

    with pytest.raises(ObjectMissing):
        await storage.get_bytes("v/ab")
    assert await storage.size("v/ab") is None


async def test_delete_removes_the_object_and_a_missing_one_is_fine(
    storage: LocalStorage,
) -> None:
    await storage.put_bytes("v/ab/photo.jpg", b"x", "image/jpeg")

    await storage.delete("v/ab/photo.jpg")
    await storage.delete("v/ab/photo.jpg")  # deletes are retried
    await storage.delete("never/existed")

    assert await storage.size("v/ab/photo.jpg") is None


async def test_delete_many_removes_every_object_named_and_nothing_else(
    storage: LocalStorage,
) -> None:
    for name in ("a", "b", "c"):
        await storage.put_bytes(f"v/ab/{name}.jpg", b"x", "image/jpeg")

    await storage.delete_many(["v/ab/a.jpg", "v/ab/c.jpg", "never/existed"])
    await storage.delete_many(["v/ab/a.jpg"])  # deletes are retried
    await storage.delete_many([])

    assert [await storage.size(f"v/ab/{n}.jpg") for n in "abc"] == [None, 1, None]


BAD_KEYS = [
    "",
    "..",
    "../outside.txt",
    "v/../../outside.txt",
    "v/..",
    "a..b/../../outside.txt",
    "/etc/passwd",
    "/outside.txt",
    "v\\..\\..\\outside.txt",
    "v\\photo.jpg",
    "v//photo.jpg",
    "v/photo.jpg/",
    "./v/photo.jpg",
    ".staging/upload",
    "v/.hidden",
    "v/photo\x00.jpg",
    "v/ph oto.jpg",
    "x" * 129,
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_unsafe_key_is_refused_by_every_operation_and_touches_nothing_outside(
    tmp_path: Path, storage: LocalStorage, key: str
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    source = storage.staging_dir() / "upload"
    source.write_bytes(b"payload")

    with pytest.raises(InvalidKey):
        await storage.put_bytes(key, b"payload", "image/jpeg")
    with pytest.raises(InvalidKey):
        await storage.put_file(key, source, "image/jpeg")
    with pytest.raises(InvalidKey):
        await storage.get_bytes(key)
    with pytest.raises(InvalidKey):
        await storage.size(key)
    with pytest.raises(InvalidKey):
        await storage.delete(key)
    with pytest.raises(InvalidKey):
        await storage.delete_many(["v/ab/fine.jpg", key])
    with pytest.raises(InvalidKey):
        storage.local_path(key)

    assert outside.read_bytes() == b"not yours"
    assert source.read_bytes() == b"payload"  # not consumed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside.txt", "store"]
    assert _staged(storage) == [source]


async def test_check_round_trips_through_the_store(storage: LocalStorage) -> None:
    await storage.check()
    await storage.check()
    assert _staged(storage) == []


def test_storage_url_chooses_local_storage_under_its_path(tmp_path: Path) -> None:
    storage = storage_from_url(f"file://{tmp_path / 'media'}")
    assert isinstance(storage, LocalStorage)
    assert storage.root == (tmp_path / "media").resolve()
    with pytest.raises(ValueError, match="unsupported"):
        storage_from_url("s4://bucket")


def test_staging_files_a_crashed_process_left_are_swept_at_start_but_fresh_ones_kept(
    root: Path,
) -> None:
    staging = LocalStorage(root).staging_dir()
    stale, fresh = staging / "crashed-upload", staging / "upload-in-progress"
    stale.write_bytes(b"half an upload")
    fresh.write_bytes(b"another process is writing this")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))

    LocalStorage(root)  # the next process starts

    assert not stale.exists()
    assert fresh.read_bytes() == b"another process is writing this"


async def test_writes_reach_the_disk_before_the_object_is_visible(
    storage: LocalStorage, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a power cut could otherwise lose: the bytes, the new name, the new folders.
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    await storage.put_bytes("v/cd/photo.jpg", b"bytes", "image/jpeg")
    staged = storage.staging_dir() / "upload.part"
    staged.write_bytes(b"original")
    await storage.put_file("originals/2026/p/m", staged, "image/jpeg")

    store = str(root.resolve())
    assert any(path.startswith(f"{store}/.staging/") for path in synced)  # the bytes, before rename
    for folder in ("", "/v", "/v/cd", "/originals", "/originals/2026", "/originals/2026/p"):
        assert store + folder in synced


class _Fsync:
    """One fsync call: what it synced, and whether the object's final name existed yet."""

    def __init__(self, fd: int, final: Path) -> None:
        st = os.fstat(fd)
        self.is_dir = stat.S_ISDIR(st.st_mode)
        self.inode = st.st_ino
        self.path = os.readlink(f"/proc/self/fd/{fd}")
        self.final_visible = final.exists()


@pytest.mark.parametrize("how", ["put_bytes", "put_file"])
async def test_each_write_syncs_its_bytes_before_the_rename_and_its_folder_after(
    storage: LocalStorage, root: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # put_bytes (variants) and put_file (originals) each, on their own: a test of both writes
    # at once passed as long as either of them synced.
    key = f"{how}/ab/object"
    final = root.resolve() / key
    await storage.put_bytes(f"{how}/ab/other", b"the folder exists already", "text/plain")
    calls: list[_Fsync] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        calls.append(_Fsync(fd, final))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    if how == "put_bytes":
        await storage.put_bytes(key, b"variant bytes", "image/jpeg")
    else:
        staged = storage.staging_dir() / "upload.part"
        staged.write_bytes(b"original bytes")
        await storage.put_file(key, staged, "image/jpeg")

    inode = final.stat().st_ino
    assert any(not c.is_dir and c.inode == inode and not c.final_visible for c in calls), (
        "the object's bytes were not synced before it took its name",
        [(c.path, c.final_visible) for c in calls],
    )
    assert any(c.is_dir and c.path == str(final.parent) and c.final_visible for c in calls), (
        "the folder holding the new name was not synced after the rename",
        [(c.path, c.final_visible) for c in calls],
    )


def _folders_fail_to_fsync(monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    real_fsync = os.fsync

    def fsync_files_only(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(error, os.strerror(error))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_files_only)


async def test_a_filesystem_that_cannot_fsync_folders_still_takes_writes(
    storage: LocalStorage, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _folders_fail_to_fsync(monkeypatch, errno.EINVAL)  # as some FUSE and network mounts do
    await storage.put_bytes("v/ef/photo.jpg", b"bytes", "image/jpeg")
    staged = storage.staging_dir() / "upload.part"
    staged.write_bytes(b"original")
    await storage.put_file("originals/2026/q/m", staged, "image/jpeg")
    assert await storage.get_bytes("v/ef/photo.jpg") == b"bytes"
    assert await storage.get_bytes("originals/2026/q/m") == b"original"


async def test_a_failing_folder_fsync_is_reported_as_the_io_error_it_is(
    storage: LocalStorage, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real I/O error is reported, not mistaken for a move across filesystems.
    staged = storage.staging_dir() / "upload.part"
    staged.write_bytes(b"original")
    _folders_fail_to_fsync(monkeypatch, errno.EIO)
    with pytest.raises(StorageUnavailable) as failure:
        await storage.put_file("originals/2026/r/m", staged, "image/jpeg")
    cause = failure.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.EIO


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root"
)
async def test_staging_on_a_filesystem_of_its_own_still_stores_atomically(root: Path) -> None:
    # An operator may put staging on a tmpfs: a rename cannot cross into the store, so the
    # temporary files are made beside their targets instead (it was a 500 on every upload).
    storage = LocalStorage(root)
    staging = storage.staging_dir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(staging)], check=True)
    try:
        await storage.put_bytes("v/ab/one.jpg", b"variant", "image/jpeg")
        spooled = staging / "upload"
        spooled.write_bytes(b"original" * 1000)
        await storage.put_file("originals/2026120414/1/2", spooled, "image/jpeg")
        assert await storage.get_bytes("v/ab/one.jpg") == b"variant"
        assert await storage.get_bytes("originals/2026120414/1/2") == b"original" * 1000
        assert list(staging.iterdir()) == []
        leftovers = [p for p in root.rglob(".incoming-*")]
        assert leftovers == []
    finally:
        subprocess.run(["umount", "-l", str(staging)], check=False)
