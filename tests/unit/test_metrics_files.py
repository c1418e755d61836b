"""The multiprocess metrics files reserve their pages before writing them (ops/metrics_files.py):
a full /dev/shm is an OSError that loses a sample, never a SIGBUS that kills the API process on
a new series (as it did: a full tmpfs, one request, the process gone)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict

import glimpse.ops.metrics  # noqa: F401  (installs the reservation, as every process does)


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_every_page_written_is_reserved_first(tmp_path: Path) -> None:
    path = tmp_path / "counter_1.db"
    values = MmapedDict(str(path))
    assert _allocated(path) >= 64 * 1024  # the whole first map, not a sparse file
    for n in range(3000):  # past the first 64 KB: the file grows
        values.write_value(f"glimpse_http_requests_total{{route=/r{n}}}", float(n), 0.0)
    assert _allocated(path) >= values._used
    assert values.read_value("glimpse_http_requests_total{route=/r2999}") == (2999.0, 0.0)
    values.close()


def test_a_full_folder_is_an_error_not_a_write_into_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = MmapedDict(str(tmp_path / "counter_1.db"))
    known.write_value("seen", 1.0, 0.0)

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError, match="No space"):
        known.write_value("a new series", 1.0, 0.0)
    known.write_value("seen", 2.0, 0.0)  # what has its place keeps counting
    assert known.read_value("seen") == (2.0, 0.0)
    with pytest.raises(OSError, match="No space"):
        MmapedDict(str(tmp_path / "counter_2.db"))
    known.close()


def test_serve_finds_a_full_metrics_folder_before_its_processes_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (serve then lets each process keep its own metrics, rather than every one of them failing
    # as it makes its first metric: cli._share_metrics.)
    from glimpse.cli import _probe_room

    _probe_room(tmp_path / ".probe")
    assert not (tmp_path / ".probe").exists()

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError, match="No space"):
        _probe_room(tmp_path / ".probe")
    assert not (tmp_path / ".probe").exists()
