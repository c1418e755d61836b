"""The command line: --version, and how many workers `glimpse serve` starts."""

import importlib.metadata
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glimpse.cli import app, worker_count
from glimpse.config import Settings


def test_version_prints_the_installed_version_and_exits_0() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"glimpse {importlib.metadata.version('glimpse')}"


def test_commands_still_run_beside_the_version_option() -> None:
    result = CliRunner().invoke(app, ["migrate", "--help"])
    assert result.exit_code == 0, result.output
    assert "migrations" in result.output


@pytest.mark.parametrize(
    ("variable", "flag", "no_workers", "expected"),
    [
        (None, None, False, os.cpu_count() or 1),  # nothing said: one per core
        (0, None, False, os.cpu_count() or 1),
        (3, None, False, 3),  # GLIMPSE_WORKERS
        (3, 1, False, 1),  # the flag wins
        (3, 0, False, os.cpu_count() or 1),
        (3, 2, True, 0),  # --no-workers wins over both
    ],
)
def test_worker_count(
    variable: int | None, flag: int | None, no_workers: bool, expected: int
) -> None:
    settings = Settings(workers=variable)
    assert worker_count(settings, flag, no_workers) == expected


def test_host_port_and_workers_are_read_from_glimpse_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GLIMPSE_HOST", "0.0.0.0")
    monkeypatch.setenv("GLIMPSE_PORT", "9123")
    monkeypatch.setenv("GLIMPSE_WORKERS", "4")
    settings = Settings()
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 9123, 4)


@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_an_unusable_data_folder_stops_with_one_clear_line(tmp_path: Path, command: str) -> None:
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("a file where the data folder should be")
    result = CliRunner().invoke(app, [command, "--data-dir", str(not_a_folder)])
    assert result.exit_code == 1
    assert "cannot use the data folder" in result.output
    assert "Traceback" not in result.output


def test_edge_config_prints_a_config_and_refuses_options_that_cannot_work(tmp_path: Path) -> None:
    cache = tmp_path / "edge-cache"
    base = ["edge-config", "--listen", "127.0.0.1:8443", "--upstream", "http://127.0.0.1:8000"]
    result = CliRunner().invoke(app, [*base, "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# nginx edge for Glimpse")
    assert f'pid "{cache.resolve()}/nginx.pid";' in result.output
    assert cache.is_dir()  # made, so that nginx can start in it
    refused = CliRunner().invoke(
        app, [*base, "--cache-dir", str(tmp_path / "other"), "--tls-cert", "/c.pem"]
    )
    assert refused.exit_code == 2
    assert "--tls-cert and --tls-key go together" in refused.output
    assert "worker_processes" not in refused.output  # no half a configuration
    assert not (tmp_path / "other").exists()
