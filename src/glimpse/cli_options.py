"""What every `glimpse` command that touches the data folder shares: its `--data-dir` option
and the settings it gives (`glimpse serve`'s and the operator's commands alike), in one place so
that they cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from glimpse.config import Settings

DataDir = Annotated[
    Path | None,
    typer.Option(
        help="Where the embedded database and media live (or GLIMPSE_DATA_DIR; default ./data)."
    ),
]


def settings_for(data_dir: Path | None) -> Settings:
    """The GLIMPSE_* settings, with `--data-dir` winning over GLIMPSE_DATA_DIR when given."""
    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings
