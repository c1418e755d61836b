"""Chooses the storage backend from GLIMPSE_STORAGE_URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from glimpse.backends.storage.base import InvalidKey, ObjectMissing, Storage, check_key
from glimpse.backends.storage.local import LocalStorage, disk_fault


def storage_from_url(
    url: str, *, free_bytes_floor: int = 0, staging_dir: Path | None = None
) -> Storage:
    """`free_bytes_floor`: below this much free space the store's check() fails (/readyz).
    `staging_dir`: where a remote store spools uploads on this machine (under the data folder)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(parsed.path), free_bytes_floor=free_bytes_floor)
    if parsed.scheme == "s3":
        if staging_dir is None:
            raise ValueError("an s3:// store needs a local staging folder")
        # Imported here: aiobotocore is the `s3` extra, not needed by the embedded default.
        from glimpse.backends.storage.s3 import S3Location, S3Storage

        return S3Storage(S3Location.from_url(url), staging_dir)
    raise ValueError(
        f"unsupported storage URL scheme {parsed.scheme!r} (supported: file://, s3://)"
    )


__all__ = [
    "InvalidKey",
    "LocalStorage",
    "ObjectMissing",
    "Storage",
    "check_key",
    "disk_fault",
    "storage_from_url",
]
