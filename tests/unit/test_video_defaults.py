"""The video limits and lanes API.md and docs/api.md promise, as the settings' defaults: a
deployment that sets nothing gets exactly these."""

from __future__ import annotations

from glimpse.config import Settings


def default(name: str) -> object:
    return Settings.model_fields[name].default


def test_video_limits_are_api_md_s() -> None:
    # 200 MB per video file (MB as the photo limit counts them: 50 MB is 50 * 2**20 bytes).
    assert default("max_video_bytes") == 200 * 2**20
    assert default("max_image_bytes") == 50 * 2**20
    # 90 s in a post, 60 s in a story.
    assert default("max_video_seconds") == 90.0
    assert default("max_story_video_seconds") == 60.0


def test_video_lanes_and_checks_are_docs_api_md_s() -> None:
    # A transcode's lease (renewed every third of it), its lanes, and the upload checks' room.
    assert default("video_job_lease_seconds") == 180.0
    assert default("video_worker_concurrency") == 1
    assert default("video_check_concurrency") == 2
    assert default("video_check_queue") == 8
