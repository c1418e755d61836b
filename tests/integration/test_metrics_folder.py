"""The shared metrics folders of `glimpse serve`: one per running serve, the stopped ones removed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from glimpse.cli import _claim_metrics_folder, _remove_metrics_of_stopped_serves

# A serve elsewhere: it claims a folder and holds it until told to stop.
_OTHER_SERVE = """
import sys
from pathlib import Path
from glimpse.cli import _claim_metrics_folder
print(_claim_metrics_folder(Path(sys.argv[1])).name, flush=True)
sys.stdin.read()
"""


def test_only_the_metrics_of_serves_still_running_are_kept(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    ours = _claim_metrics_folder(folder)
    other = subprocess.Popen(
        [sys.executable, "-c", _OTHER_SERVE, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdout is not None
    running_elsewhere = other.stdout.readline().strip()
    stopped = subprocess.Popen(
        [sys.executable, "-c", _OTHER_SERVE, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    stopped_name = stopped.communicate("")[0].strip()  # it claimed a folder, then exited
    for name in (ours.name, running_elsewhere, stopped_name):
        (folder / name / "counter_1234.db").write_bytes(b"counts")
    (folder / "counter_99.db").write_bytes(b"from an older release, one folder for all")
    (folder / str(os.getpid())).mkdir()  # a folder without a lock: an older release's
    being_made = folder / ".4242-abcdef"
    being_made.mkdir()
    abandoned = folder / ".4343-abcdef"
    abandoned.mkdir()
    os.utime(abandoned, (time.time() - 7200, time.time() - 7200))

    try:
        _remove_metrics_of_stopped_serves(folder)
        left = sorted(p.name for p in folder.iterdir())
    finally:
        other.communicate("")

    assert left == sorted([ours.name, running_elsewhere, being_made.name])
    assert (ours / "counter_1234.db").read_bytes() == b"counts"
