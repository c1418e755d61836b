"""The local folder where uploads are spooled before they are stored, whatever the store."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

# While an upload arrives its spooled files are touched every minute (posts/upload.py) until
# they are moved into place; one nobody has touched for an hour was cut off by a crash.
STALE_STAGING_SECONDS = 3600


def sweep_stale_files(folder: Path) -> int:
    """Remove the files in `folder` nobody has written to for an hour; returns how many."""
    # Only files nobody is writing: other processes share this directory.
    cutoff = time.time() - STALE_STAGING_SECONDS
    removed = 0
    for entry in folder.iterdir():
        with contextlib.suppress(OSError):
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed += 1
    return removed
