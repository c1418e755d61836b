"""The object-storage contract: originals and variants, addressed by key."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Protocol

# Keys are a few path-like segments of safe characters; nothing else is ever accepted, so a key
# can never name a place outside the store on any backend.
_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}(/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}){0,7}$")


class InvalidKey(ValueError):
    pass


class ObjectMissing(KeyError):
    pass


def check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key:
        raise InvalidKey(key)
    return key


class Storage(Protocol):
    """Every method raises glimpse.errors.StorageUnavailable when the store cannot serve it now
    (a full, read-only or failing disk, a timeout): a fault that passes, unlike ObjectMissing."""

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key` atomically: readers see the old object or the new, never half."""

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store a spooled upload; the file at `path` is consumed (moved when possible)."""

    async def get_bytes(self, key: str) -> bytes:
        """Raises ObjectMissing."""

    async def fetch_to_file(self, key: str, path: Path) -> None:
        """Copy the object into a local file (a video the decoding child reads, without it
        passing through memory whole). Raises ObjectMissing."""

    async def size(self, key: str) -> int | None:
        """The object's size, or None when there is no such object."""

    async def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error (deletes are retried)."""

    async def delete_many(self, keys: Sequence[str]) -> None:
        """`delete` of each key, in one round trip where the store allows (a purge of an
        expired story's ten variants, or of thousands of them)."""

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (a key-shaped folder, like "originals/2026112611")."""

    async def open_range(self, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        """`length` bytes of the object from `offset` on, as chunks to stream (the media origin
        serving a video's range from a store that is not a local disk). The object is opened
        here, so a missing one raises ObjectMissing before any byte is sent."""

    async def object_url(self, key: str, expires_in: int | None) -> str | None:
        """A URL where a client can fetch the object from the store itself: signed for
        `expires_in` seconds, or its plain (public) URL when None. None when the store has no
        URLs of its own (the local disk)."""

    def local_path(self, key: str) -> Path | None:
        """Where the object lies on this machine's disk, if it does: lets the origin serve it
        without copying through Python buffers."""

    async def sweep_staging(self) -> int:
        """Remove spooled files that a crash left behind (nobody has written to them for an
        hour); returns how many. Runs at start and with the hourly sweep."""

    def staging_dir(self) -> Path:
        """A local directory for spooling uploads (on the store's filesystem when there is one)."""

    async def start(self) -> None:
        """Connect (and create the bucket a store needs); called once by Container.start."""

    async def close(self) -> None:
        """Let go of connections; called by Container.close."""

    async def check(self) -> None:
        """A real round trip for /readyz; raises when the store does not answer."""


# The folder of /readyz's probe objects: outside STORED_FOLDERS (ops/storage_check.py), never
# served by the media origin, which serves only the keys the database records.
PROBE_FOLDER = "readyz"


async def write_probe(storage: Storage) -> None:
    """/readyz's round trip to a store: write a small object, read it back and delete it.

    A store that still answers reads but refuses writes (a read-only mount, a full disk, a
    bucket policy or quota) cannot take an upload, so only a write proves it ready. Each probe
    has its own key: two /readyz at once (two proxies checking) must not read or delete each
    other's object, and a deleted probe leaves the store as it was."""
    key = f"{PROBE_FOLDER}/{uuid.uuid4().hex}"
    payload = key.encode()
    try:
        await storage.put_bytes(key, payload, "text/plain")
        if await storage.get_bytes(key) != payload:
            raise OSError("the store returned other bytes than it was given")
    except BaseException:
        # What failed is the reason /readyz gives, not a delete that fails the same way after.
        with contextlib.suppress(Exception):
            await storage.delete(key)
        raise
    await storage.delete(key)
