"""Chooses the storage backend from GLIMPSE_STORAGE_URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from glimpse.backends.storage.base import InvalidKey, ObjectMissing, Storage, check_key
from glimpse.backends.storage.local import LocalStorage


def storage_from_url(url: str) -> Storage:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(parsed.path))
    raise ValueError(f"unsupported storage URL scheme {parsed.scheme!r} (supported: file://)")


__all__ = [
    "InvalidKey",
    "LocalStorage",
    "ObjectMissing",
    "Storage",
    "check_key",
    "storage_from_url",
]
