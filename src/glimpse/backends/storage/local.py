"""Objects as files under one root directory.

Every write is atomic and durable: the bytes are fsynced in a temporary file, renamed into place,
and the directory entry fsynced, so that neither a crash nor a power cut leaves a half-written
object or loses one whose key the database already holds. (fsync costs about 0.3 ms a file here.)

A disk that is full, read-only, refusing access or failing (the OS errors in `TRANSIENT_ERRNOS`,
and timeouts) raises StorageUnavailable: the API answers 503 with Retry-After, and the worker
retries the job for as long as storage_retry_window_seconds, since the store usually comes back
(space freed, a mount remounted) and the photo is not at fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from glimpse.backends.storage.base import ObjectMissing, check_key, write_probe
from glimpse.backends.storage.staging import sweep_stale_files
from glimpse.errors import StorageUnavailable

# Faults of the disk or the mount, not of the request or the object: they pass.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,  # full
        errno.EDQUOT,  # over the user's quota
        errno.EROFS,  # remounted read-only (after errors, or by an operator)
        errno.EACCES,  # permissions changed under us
        errno.EPERM,
        errno.EIO,  # a failing disk or a network mount that lost its server
        errno.ETIMEDOUT,
        errno.ESTALE,  # NFS handle of a folder replaced on the server
        errno.EMFILE,  # out of file descriptors: the process's trouble, and it passes
        errno.ENFILE,
    }
)


def disk_fault(exc: OSError, action: str) -> Exception:
    """StorageUnavailable for a fault of the disk or the mount (`action`: what could not be
    done, as in "store files"); the error itself for anything else."""
    if not (isinstance(exc, TimeoutError) or exc.errno in TRANSIENT_ERRNOS):
        return exc
    reason = os.strerror(exc.errno) if exc.errno else "timed out"
    unavailable = StorageUnavailable(
        f"The media store cannot {action} now ({reason.lower()}); please try again later.",
        retry_after=StorageUnavailable.RETRY_AFTER_SECONDS,
    )
    unavailable.__cause__ = exc
    return unavailable


@contextlib.contextmanager
def _unavailable_on_disk_faults(action: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        fault = disk_fault(exc, action)
        if fault is exc:
            raise
        raise fault from exc


def _read_file(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# Read a streamed file this much at a time: large enough that a thread hop per chunk is noise,
# small enough that a slow client holds little memory.
_STREAM_CHUNK = 256 * 1024


async def _file_section(f: BinaryIO, offset: int, length: int) -> AsyncIterator[bytes]:
    try:
        await asyncio.to_thread(f.seek, offset)
        while length > 0:
            with _unavailable_on_disk_faults("read files"):
                chunk = await asyncio.to_thread(f.read, min(_STREAM_CHUNK, length))
            if not chunk:  # (the file cannot shrink: keys are never rewritten)
                return
            length -= len(chunk)
            yield chunk
    finally:
        f.close()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems (certain FUSE and network mounts) cannot fsync a folder at all;
        # like PostgreSQL, take that as "nothing to do" rather than fail every write.
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


class LocalStorage:
    def __init__(self, root: Path, *, free_bytes_floor: int = 0) -> None:
        self.root = root.resolve()
        # Below this much free space check() fails: a disk that is nearly full is reported
        # before writes start failing, and before SQLite (often on the same disk) runs out.
        self._free_bytes_floor = free_bytes_floor
        self._tmp = self.root / ".staging"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._sweep_staging()

    def _sweep_staging(self) -> int:
        return sweep_stale_files(self._tmp)

    async def sweep_staging(self) -> int:
        return await asyncio.to_thread(self._sweep_staging)

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        # check_key already forbids "..", this is the second lock on the same door.
        if not path.is_relative_to(self.root) or path == self.root:
            raise ObjectMissing(key)
        return path

    def _make_parent(self, path: Path) -> None:
        missing = [p for p in path.parents if p.is_relative_to(self.root) and not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        # A new folder's own entry must reach the disk too, or a power cut can lose the folder.
        for folder in reversed(missing):
            _fsync_dir(folder.parent)

    def _rename_in(self, tmp: Path, path: Path) -> None:
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def _write_atomically(self, path: Path, fill: Callable[[BinaryIO], object]) -> None:
        """Write a temporary file with `fill`, sync it, then rename it into place."""
        self._make_parent(path)
        # In staging, where the sweep finds what a crash left; but a rename cannot cross
        # filesystems, so beside the target when staging is a mount of its own (a tmpfs).
        folder = self._tmp
        if os.stat(folder).st_dev != os.stat(path.parent).st_dev:
            folder = path.parent
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            self._rename_in(Path(tmp), path)
        except BaseException:
            # On a disk that fails the write, the clean-up may fail too: the first error is the
            # one to report, and the sweep of staging takes the file later.
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
            raise

    def _move_in(self, path: Path, source: Path) -> None:
        self._make_parent(path)
        with open(source, "rb") as f:
            os.fsync(f.fileno())
        try:
            self._rename_in(source, path)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # Another filesystem: copied beside the target, then renamed, so still atomic.
            with open(source, "rb") as src:
                self._write_atomically(path, lambda f: shutil.copyfileobj(src, f))
            source.unlink(missing_ok=True)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        with _unavailable_on_disk_faults("store files"):
            await asyncio.to_thread(self._write_atomically, path, lambda f: f.write(data))

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        target = self._path(key)
        with _unavailable_on_disk_faults("store files"):
            await asyncio.to_thread(self._move_in, target, path)

    async def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with _unavailable_on_disk_faults("read files"):
                return await asyncio.to_thread(_read_file, path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectMissing(key) from exc

    async def fetch_to_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        with _unavailable_on_disk_faults("read files"):
            try:
                await asyncio.to_thread(shutil.copyfile, source, path)
            except FileNotFoundError:
                raise ObjectMissing(key) from None

    async def size(self, key: str) -> int | None:
        try:
            with _unavailable_on_disk_faults("read files"):
                st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError, ObjectMissing):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    async def delete(self, key: str) -> None:
        path = self._path(key)
        with _unavailable_on_disk_faults("delete files"):
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def delete_many(self, keys: Sequence[str]) -> None:
        for key in keys:
            check_key(key)  # (every key is refused before any file goes)

        def unlink_all() -> None:
            for key in keys:
                # Resolving each path (the guard against links out of the store) costs more
                # than the unlink: it is done here too, off the event loop.
                self._path(key).unlink(missing_ok=True)

        # One hop to a thread for them all: a hop costs more than an unlink.
        with _unavailable_on_disk_faults("delete files"):
            await asyncio.to_thread(unlink_all)

    async def list_keys(self, prefix: str) -> list[str]:
        folder = self._path(prefix.rstrip("/"))

        def walk() -> list[str]:
            if not folder.is_dir():
                return []
            return sorted(
                p.relative_to(self.root).as_posix() for p in folder.rglob("*") if p.is_file()
            )

        with _unavailable_on_disk_faults("list files"):
            return await asyncio.to_thread(walk)

    async def open_range(self, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            with _unavailable_on_disk_faults("read files"):
                f = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectMissing(key) from exc
        return _file_section(f, offset, length)

    async def object_url(self, key: str, expires_in: int | None) -> str | None:
        return None

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def staging_dir(self) -> Path:
        return self._tmp

    async def check(self) -> None:
        if self._free_bytes_floor:
            with _unavailable_on_disk_faults("report its free space"):
                free = (await asyncio.to_thread(shutil.disk_usage, self.root)).free
            if free < self._free_bytes_floor:
                raise StorageUnavailable(
                    f"The media store's disk has {free // 2**20} MB free, below the floor of"
                    f" {self._free_bytes_floor // 2**20} MB.",
                    retry_after=StorageUnavailable.RETRY_AFTER_SECONDS,
                )
        await write_probe(self)
