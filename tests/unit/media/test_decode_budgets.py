"""The decoding budgets each kind of work gets from the settings."""

from __future__ import annotations

from pathlib import Path

from glimpse.config import Settings
from glimpse.media.decoding import (
    VIDEO_PROBE_CPU_SECONDS,
    VIDEO_PROBE_MEMORY_BYTES,
    VIDEO_PROBE_TIMEOUT_SECONDS,
    DecodeBudget,
)


def test_an_upload_s_video_check_gets_a_short_budget_within_the_video_memory_setting(
    tmp_path: Path,
) -> None:
    roomy = DecodeBudget.for_video_probe(Settings(data_dir=tmp_path))
    assert roomy == DecodeBudget(
        VIDEO_PROBE_CPU_SECONDS, VIDEO_PROBE_MEMORY_BYTES, VIDEO_PROBE_TIMEOUT_SECONDS
    )
    # An operator who gave videos less memory than the check's own budget is obeyed.
    small = 300 * 2**20
    tight = DecodeBudget.for_video_probe(
        Settings(data_dir=tmp_path, video_decode_memory_bytes=small)
    )
    assert tight.memory_bytes == small


def test_a_transcode_gets_the_video_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        video_decode_cpu_seconds=77,
        video_decode_memory_bytes=999 * 2**20,
        video_decode_timeout_seconds=88,
    )
    assert DecodeBudget.for_video(settings) == DecodeBudget(77, 999 * 2**20, 88)
