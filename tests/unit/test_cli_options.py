"""`--data-dir` and GLIMPSE_DATA_DIR, as every command that touches the data folder reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from glimpse import cli
from glimpse.cli_options import settings_for
from glimpse.ops import admin_cli


def test_the_flag_wins_over_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIMPSE_DATA_DIR", str(tmp_path / "from-variable"))
    assert settings_for(tmp_path / "from-flag").data_dir == tmp_path / "from-flag"
    assert settings_for(None).data_dir == tmp_path / "from-variable"


def test_serve_and_the_operator_commands_share_one_option() -> None:
    # The review finding: two copies drifted apart once; there must be one.
    assert cli.DataDir is admin_cli.DataDir
    assert not hasattr(cli, "_settings") and not hasattr(admin_cli, "_settings")
