"""The operator's commands as an operator runs them: `glimpse users|jobs|storage|backup|restore`
in processes of their own, on a data folder, with their exit codes and what they print."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def glimpse(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "GLIMPSE_SECRET_KEY": "", "GLIMPSE_LOG_FORMAT": "text"}
    return subprocess.run(
        [sys.executable, "-m", "glimpse.cli", *args, "--data-dir", str(data_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )


def test_accounts_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = glimpse(data, "users", "create", "alice", "--password-stdin", stdin="correct horse\n")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("created alice")
    taken = glimpse(data, "users", "create", "alice", "--password-stdin", stdin="another one\n")
    assert taken.returncode == 1 and "taken" in taken.stderr and "Traceback" not in taken.stderr
    bad = glimpse(data, "users", "create", "Alice!", "--password-stdin", stdin="correct horse\n")
    assert bad.returncode == 1 and "cannot be a username" in bad.stderr
    for command in ("create", "reset-password"):
        both = glimpse(
            data, "users", command, "alice", "--generate", "--password-stdin", stdin="x y z w\n"
        )
        assert both.returncode == 2 and "not both" in both.stderr, both
        assert "Traceback" not in both.stderr
    generated = glimpse(data, "users", "reset-password", "alice", "--generate")
    assert generated.returncode == 0, generated.stderr
    password = generated.stdout.split("password: ")[1].strip()
    assert len(password) == 20
    assert glimpse(data, "users", "disable", "alice").stdout.strip() == "alice disabled"
    assert "already" in glimpse(data, "users", "disable", "alice").stdout
    assert glimpse(data, "users", "enable", "alice").returncode == 0
    unknown = glimpse(data, "users", "disable", "nobody")
    assert unknown.returncode == 1 and "no account named 'nobody'" in unknown.stderr


def test_jobs_and_storage_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert glimpse(data, "users", "create", "alice", "--generate").returncode == 0
    listed = glimpse(data, "jobs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert all(json.loads(line)["state"] for line in listed.stdout.splitlines())
    wrong = glimpse(data, "jobs", "list", "--state", "sleeping")
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    not_dead = glimpse(data, "jobs", "retry", "12345")
    assert not_dead.returncode == 1 and "12345" in not_dead.stderr
    assert glimpse(data, "jobs", "retry").returncode == 2  # ids or --all-dead
    assert glimpse(data, "jobs", "purge-dead", "--older-than-days", "0").returncode == 0
    verified = glimpse(data, "storage", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "0 missing" in verified.stdout


def test_backup_and_restore_from_the_command_line(tmp_path: Path) -> None:
    data, backup, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    assert glimpse(data, "users", "create", "alice", "--generate").returncode == 0
    taken = glimpse(data, "backup", str(backup))
    assert taken.returncode == 0, taken.stderr
    assert json.loads((backup / "backup.json").read_text())["missing"] == 0
    again = glimpse(data, "backup", str(backup))
    assert again.returncode == 1 and "not empty" in again.stderr
    put_back = glimpse(restored, "restore", str(backup))
    assert put_back.returncode == 0, put_back.stderr
    assert (restored / "secret_key").read_text() == (data / "secret_key").read_text()
    # The restored folder is a working one: its account is there.
    enabled = glimpse(restored, "users", "enable", "alice")
    assert enabled.returncode == 0 and "alice was not disabled" in enabled.stdout
    over = glimpse(restored, "restore", str(backup))
    assert over.returncode == 1 and "move it away" in over.stderr
    # Into a folder that holds a secret_key of its own: kept, and said.
    other = tmp_path / "other"
    other.mkdir()
    (other / "secret_key").write_text("another secret, of another server\n")
    kept = glimpse(other, "restore", str(backup))
    assert kept.returncode == 0, kept.stderr
    assert "kept the secret_key already in" in kept.stderr
    assert (other / "secret_key").read_text() == "another secret, of another server\n"
    assert "secret_key" not in put_back.stderr  # (the first restore had none of its own)


def test_numbers_past_what_the_database_holds_are_refused_as_typed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    too_big = str(2**64)
    for args in (
        ("jobs", "list", "--limit", too_big),
        ("jobs", "retry", too_big),
        ("media", "backfill-avif", "--after", too_big),
    ):
        refused = glimpse(data, *args)
        assert refused.returncode == 2, (args, refused.stderr)
        assert "Traceback" not in refused.stderr and "Invalid value" in refused.stderr
