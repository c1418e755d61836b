"""prometheus_client's multiprocess files (PROMETHEUS_MULTIPROC_DIR: serve puts them in /dev/shm)
are sparse files written through a memory map: a write into a page the file system cannot give
(a full /dev/shm, a container's 64 MB one) is not an error but SIGBUS, and the API process dies
on the first request that makes a new series. Each page is reserved here before the map is
written: a full folder then raises OSError (ENOSPC), which loses the sample (metrics.never_failing,
request_log.record_request) and keeps the process.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from prometheus_client import mmap_dict

# A file system that cannot reserve (no fallocate) keeps prometheus_client's behaviour.
_CANNOT_RESERVE = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})

_installed = False


def _reserve(fd: int, offset: int, length: int) -> None:
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        if exc.errno not in _CANNOT_RESERVE:
            raise


def reserve_before_writing() -> None:
    """Make every multiprocess metrics file reserve its pages before writing them. Idempotent;
    to be called before the first metric is made."""
    global _installed
    if _installed or not hasattr(os, "posix_fallocate"):
        return
    _installed = True
    cls: Any = mmap_dict.MmapedDict
    original_init = cls.__init__
    original_init_value = cls._init_value

    def __init__(self: Any, filename: str, read_mode: bool = False) -> None:
        if not read_mode:
            # (A new file is made 64 KB long and its first word written at once.)
            with open(filename, "a+b") as f:
                if os.fstat(f.fileno()).st_size == 0:
                    _reserve(f.fileno(), 0, mmap_dict._INITIAL_MMAP_SIZE)
        original_init(self, filename, read_mode)

    def _init_value(self: Any, key: str) -> None:
        # The entry's length as _init_value packs it: a 4-byte length, the key padded to 8
        # bytes, two doubles.
        encoded = len(key.encode("utf-8"))
        length = 4 + encoded + (8 - (encoded + 4) % 8) + 16
        _reserve(self._f.fileno(), self._used, length)
        original_init_value(self, key)

    cls.__init__ = __init__
    cls._init_value = _init_value
