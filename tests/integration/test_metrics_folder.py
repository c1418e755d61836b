"""The shared metrics folders of `glimpse serve`: one per running serve, the stopped ones removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from glimpse.cli import _remove_metrics_of_stopped_serves


def _pid_of_a_finished_process() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_only_the_metrics_of_serves_still_running_are_kept(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    running = folder / str(os.getpid())
    stopped = folder / str(_pid_of_a_finished_process())
    for serve in (running, stopped):
        serve.mkdir(parents=True)
        (serve / "counter_1234.db").write_bytes(b"counts")
    (folder / "counter_99.db").write_bytes(b"from an older release, one folder for all")
    (folder / "notes").mkdir()  # not ours: left alone

    _remove_metrics_of_stopped_serves(folder)

    assert sorted(p.name for p in folder.iterdir()) == sorted([running.name, "notes"])
    assert (running / "counter_1234.db").read_bytes() == b"counts"


def test_a_data_dir_without_metrics_yet_is_fine(tmp_path: Path) -> None:
    _remove_metrics_of_stopped_serves(tmp_path / "metrics")
    assert not (tmp_path / "metrics").exists()
