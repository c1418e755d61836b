"""A worker process of `glimpse serve` that fails logs why in the log's format, one line,
rather than letting multiprocessing print its traceback raw (cli.worker_process_main)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from glimpse import cli
from glimpse.config import Settings


def test_a_failing_worker_process_writes_one_json_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    async def fails(*args: Any) -> None:
        raise RuntimeError('relation "node_leases" does not exist\nLINE 1: ...')

    monkeypatch.setattr(cli, "_run_worker", fails)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # (setup_logging replaces them)
    try:
        with pytest.raises(SystemExit) as stopped:
            cli.worker_process_main(settings.model_copy(update={"log_format": "json"}), 1, 1)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert stopped.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["level"] == "critical" and "node_leases" in line["error"]
