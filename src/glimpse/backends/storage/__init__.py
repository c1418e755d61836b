"""Chooses the storage backend from GLIMPSE_STORAGE_URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from glimpse.backends.storage.base import InvalidKey, ObjectMissing, Storage, check_key
from glimpse.backends.storage.local import LocalStorage, disk_fault


def storage_from_url(url: str, *, free_bytes_floor: int = 0) -> Storage:
    """`free_bytes_floor`: below this much free space the store's check() fails (/readyz)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(parsed.path), free_bytes_floor=free_bytes_floor)
    raise ValueError(f"unsupported storage URL scheme {parsed.scheme!r} (supported: file://)")


__all__ = [
    "InvalidKey",
    "LocalStorage",
    "ObjectMissing",
    "Storage",
    "check_key",
    "disk_fault",
    "storage_from_url",
]
